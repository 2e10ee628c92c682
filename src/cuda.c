/* SPDX-License-Identifier: MIT */
/* CUDA devices: whether this process can use one, and why not; cudart's
 * table of the calls CUDA plans make. */
#include <errno.h>
#include <stdio.h>

#include "config.h"
#include "cuda.h"

#if SPARDL_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "pci.h"

static int rt_probe(char *why, size_t len)
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

static int rt_get_device(int *dev)
{
	return (int)cudaGetDevice(dev);
}

static int rt_pointer_device(const void *p, int *dev)
{
	struct cudaPointerAttributes a;
	cudaError_t e = cudaPointerGetAttributes(&a, p);

	if (e == cudaErrorInvalidValue) {
		/* Older runtimes: memory they do not know is host memory. */
		(void)cudaGetLastError();
		*dev = -1;
		return 0;
	}
	if (e != cudaSuccess)
		return (int)e;
	*dev = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ? a.device : -1;
	return 0;
}

static int rt_dev_alloc(void **p, size_t len)
{
	return (int)cudaMalloc(p, len);
}

static int rt_dev_free(void *p)
{
	return (int)cudaFree(p);
}

static int rt_host_alloc(void **p, size_t len)
{
	return (int)cudaHostAlloc(p, len, cudaHostAllocPortable);
}

static int rt_host_free(void *p)
{
	return (int)cudaFreeHost(p);
}

static int rt_memcpy(void *dst, const void *src, size_t len)
{
	return (int)cudaMemcpy(dst, src, len, cudaMemcpyDefault);
}

static int rt_memcpy_async(void *dst, const void *src, size_t len, void *stream)
{
	return (int)cudaMemcpyAsync(dst, src, len, cudaMemcpyDefault, (cudaStream_t)stream);
}

static int rt_launch_host(void *stream, void (*fn)(void *), void *arg)
{
	return (int)cudaLaunchHostFunc((cudaStream_t)stream, fn, arg);
}

static int rt_stream_create(void **stream)
{
	cudaStream_t s;
	cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);

	*stream = e == cudaSuccess ? (void *)s : NULL;
	return (int)e;
}

static int rt_stream_destroy(void *stream)
{
	return (int)cudaStreamDestroy((cudaStream_t)stream);
}

static int rt_stream_sync(void *stream)
{
	return (int)cudaStreamSynchronize((cudaStream_t)stream);
}

static int rt_stream_wait_event(void *stream, void *event)
{
	return (int)cudaStreamWaitEvent((cudaStream_t)stream, (cudaEvent_t)event, 0);
}

static int rt_event_create(void **event)
{
	cudaEvent_t ev;
	cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);

	*event = e == cudaSuccess ? (void *)ev : NULL;
	return (int)e;
}

static int rt_event_destroy(void *event)
{
	return (int)cudaEventDestroy((cudaEvent_t)event);
}

static int rt_event_record(void *event, void *stream)
{
	return (int)cudaEventRecord((cudaEvent_t)event, (cudaStream_t)stream);
}

static int rt_event_sync(void *event)
{
	return (int)cudaEventSynchronize((cudaEvent_t)event);
}

static const char *rt_err_name(int err)
{
	return cudaGetErrorName((cudaError_t)err);
}

static const struct spardl_cuda_rt cudart = {
	.name = "cudart",
	.probe = rt_probe,
	.get_device = rt_get_device,
	.pointer_device = rt_pointer_device,
	.dev_alloc = rt_dev_alloc,
	.dev_free = rt_dev_free,
	.host_alloc = rt_host_alloc,
	.host_free = rt_host_free,
	.memcpy = rt_memcpy,
	.memcpy_async = rt_memcpy_async,
	.launch_host = rt_launch_host,
	.stream_create = rt_stream_create,
	.stream_destroy = rt_stream_destroy,
	.stream_sync = rt_stream_sync,
	.stream_wait_event = rt_stream_wait_event,
	.event_create = rt_event_create,
	.event_destroy = rt_event_destroy,
	.event_record = rt_event_record,
	.event_sync = rt_event_sync,
	.err_name = rt_err_name,
};

const struct spardl_cuda_rt *spardl_cuda_rt = &cudart;

int spardl_cuda_probe(char *why, size_t len)
{
	return spardl_cuda_rt->probe(why, len);
}

/* What GPUDirect RDMA would need on this machine, and how far the GPU is
 * from each RDMA device (PCI paths in sysfs). */
static void describe_gpudirect(FILE *out, int d, const char *bus)
{
	char link[PATH_MAX], gpu[PATH_MAX], nic[PATH_MAX], lower[32];
	int rdma = 0, gnuma, nnics = 0;
	struct dirent *de;
	DIR *dir;
	size_t i;

	if (cudaDeviceGetAttribute(&rdma, cudaDevAttrGPUDirectRDMASupported, d) != cudaSuccess)
		rdma = -1;
	fprintf(out, "  GPUDirect RDMA: driver support %s; nvidia_peermem %s; not used by this version (CUDA plans stage through host memory)\n",
		rdma < 0 ? "unknown" : rdma ? "yes" : "no",
		access("/sys/module/nvidia_peermem", F_OK) ? "not loaded" : "loaded");
	/* sysfs names PCI devices in lower case. */
	for (i = 0; bus[i] && i + 1 < sizeof(lower); i++)
		lower[i] = (char)(bus[i] >= 'A' && bus[i] <= 'F' ? bus[i] - 'A' + 'a' : bus[i]);
	lower[i] = 0;
	snprintf(link, sizeof(link), "/sys/bus/pci/devices/%s", lower);
	if (spardl_pci_resolve(link, gpu, sizeof(gpu))) {
		fprintf(out, "  PCI distance to RDMA devices: unknown (%s not in sysfs)\n", link);
		return;
	}
	gnuma = spardl_pci_numa(gpu);
	dir = opendir("/sys/class/infiniband");
	while (dir && (de = readdir(dir))) {
		enum spardl_pci_dist dist;

		if (de->d_name[0] == '.')
			continue;
		nnics++;
		snprintf(link, sizeof(link), "/sys/class/infiniband/%s/device", de->d_name);
		if (spardl_pci_resolve(link, nic, sizeof(nic))) {
			fprintf(out, "  to %s: not a PCI device (software RDMA): GPUDirect cannot apply\n", de->d_name);
			continue;
		}
		dist = spardl_pci_distance(gpu, gnuma, nic, spardl_pci_numa(nic));
		fprintf(out, "  to %s: %s (%s)\n", de->d_name, spardl_pci_dist_name(dist), spardl_pci_dist_what(dist));
	}
	if (dir)
		closedir(dir);
	if (!nnics)
		fprintf(out, "  PCI distance to RDMA devices: none in /sys/class/infiniband\n");
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
		describe_gpudirect(out, d, bus);
	}
	fprintf(out, "CUDA plans (SPARDL_MEM_CUDA) stage through page-locked host memory: GPUDirect is off (no dma-buf or peer-memory registration in this version)\n");
	return 0;
}
#else
const struct spardl_cuda_rt *spardl_cuda_rt;

int spardl_cuda_describe(FILE *out)
{
	char why[200];

	spardl_cuda_probe(why, sizeof(why));
	fprintf(out, "CUDA: %s\n", why);
	return 0;
}

int spardl_cuda_probe(char *why, size_t len)
{
	if (spardl_cuda_rt)
		return spardl_cuda_rt->probe(why, len);
	snprintf(why, len,
		 "no usable CUDA device: this spardl was built without CUDA (configure with -Dcuda=enabled where the CUDA Toolkit is installed)");
	return -ENODEV;
}
#endif
