/* SPDX-License-Identifier: MIT */
/* CUDA devices: whether this process can use one, and why not. */
#include <errno.h>
#include <stdio.h>

#include "config.h"
#include "cuda.h"

#if SPARDL_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <dlfcn.h>

int spardl_cuda_probe(char *why, size_t len)
{
	struct cudaDeviceProp prop;
	cudaError_t e;
	int n = 0, dev = 0;

	/* cudart loads the driver itself: without one this is an error, not
	 * a crash. */
	e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) {
		/* Without any driver the runtime says "insufficient driver":
		 * say plainly that there is none. */
		void *drv = e == cudaErrorInsufficientDriver ? dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL) : NULL;

		if (e == cudaErrorInsufficientDriver && !drv)
			snprintf(why, len, "no usable CUDA device: no NVIDIA driver on this machine (libcuda.so.1: %s)",
				 dlerror());
		else
			snprintf(why, len, "no usable CUDA device: cudaGetDeviceCount failed: %s (%s)",
				 cudaGetErrorName(e), cudaGetErrorString(e));
		if (drv)
			dlclose(drv);
		return -ENODEV;
	}
	if (n < 1) {
		snprintf(why, len, "no usable CUDA device: the driver reports none");
		return -ENODEV;
	}
	e = cudaGetDevice(&dev);
	if (e == cudaSuccess)
		e = cudaGetDeviceProperties(&prop, dev);
	if (e != cudaSuccess) {
		snprintf(why, len, "no usable CUDA device: cannot query device %d: %s (%s)", dev,
			 cudaGetErrorName(e), cudaGetErrorString(e));
		return -ENODEV;
	}
	snprintf(why, len, "CUDA device %d: %s (compute capability %d.%d, %d devices)", dev, prop.name, prop.major,
		 prop.minor, n);
	return 0;
}

int spardl_cuda_describe(FILE *out)
{
	char why[200], bus[32];
	int n = 0, d, ret = spardl_cuda_probe(why, sizeof(why));

	if (ret) {
		fprintf(out, "CUDA: %s\n", why);
		return 0;
	}
	if (cudaGetDeviceCount(&n) != cudaSuccess)
		n = 0;
	for (d = 0; d < n; d++) {
		struct cudaDeviceProp prop;
		cudaError_t e = cudaGetDeviceProperties(&prop, d);

		if (e == cudaSuccess)
			e = cudaDeviceGetPCIBusId(bus, (int)sizeof(bus), d);
		if (e != cudaSuccess) {
			fprintf(out, "CUDA device %d: cannot query it: %s\n", d, cudaGetErrorString(e));
			continue;
		}
		fprintf(out, "CUDA device %d: %s, compute capability %d.%d, %.1f GiB, PCI %s\n", d, prop.name,
			prop.major, prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), bus);
	}
	fprintf(out, "CUDA plans (SPARDL_MEM_CUDA) are not implemented in this version: no GPUDirect check yet\n");
	return 0;
}
#else
int spardl_cuda_describe(FILE *out)
{
	char why[200];

	spardl_cuda_probe(why, sizeof(why));
	fprintf(out, "CUDA: %s\n", why);
	return 0;
}

int spardl_cuda_probe(char *why, size_t len)
{
	snprintf(why, len,
		 "no usable CUDA device: this spardl was built without CUDA (configure with -Dcuda=enabled where the CUDA Toolkit is installed)");
	return -ENODEV;
}
#endif
