#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what building and testing spardl needs on Debian 12 (run as root or with sudo):
# the compilers and libraries (OpenSSL's libcrypto for the authenticated rendezvous), clang and its
# libFuzzer runtime for the fuzz suite, Open MPI for the mpirun suite, qemu and SoftRoCE tools for the verbs suite,
# numpy, PyTorch (CPU), matplotlib and Fashion-MNIST for the Python binding, the DDP hook and the convergence study.
set -euo pipefail
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends \
	build-essential meson ninja-build pkg-config python3 \
	check libhwloc-dev libibverbs-dev librdmacm-dev rdma-core ibverbs-providers libssl-dev \
	clang libclang-rt-14-dev \
	openmpi-bin libopenmpi-dev valgrind \
	qemu-system-x86 busybox-static kmod cpio iproute2 ibverbs-utils rdmacm-utils perftest vde2 gnuplot-nox \
	python3-numpy python3-torch python3-matplotlib dataset-fashion-mnist >/dev/null
echo "install-deps: done"
