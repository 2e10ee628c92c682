#!/bin/sh
# SPDX-License-Identifier: MIT
# A short run of the convergence example as a user starts it: torchrun, 4
# ranks, DDP with spardl's hook at 1%, one epoch on the first 12,000 images.
# It must reach the accuracy below (the full study is studies/convergence.py).
#   study-short.sh PYTHON BUILD_PYTHON_DIR SOURCE_DIR
set -eu
py=$1 pydir=$2 src=$3
min_accuracy=0.70
data=/usr/share/datasets/fashion-mnist
if ! "$py" -c 'import torch.distributed, numpy' 2>/dev/null; then
	echo "SKIP: $py cannot import torch.distributed and numpy (install python3-torch)"
	exit 77
fi
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
	echo "SKIP: $data has no Fashion-MNIST (install dataset-fashion-mnist)"
	exit 77
fi
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PYTHONPATH="$pydir${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
# --redirects 2 --tee 2: Debian's torchrun 1.13 crashes on Python 3.11 without them.
exec timeout 600 "$py" -m torch.distributed.run --nproc_per_node 4 --redirects 2 --tee 2 \
	--rdzv_backend c10d --rdzv_endpoint "127.0.0.1:$port" \
	"$src/examples/fashion_mnist.py" --method spardl --density 0.01 --epochs 1 --subset 12000 \
	--min-accuracy "$min_accuracy"
