#!/usr/bin/env bash
# Fashion-MNIST (Zalando, MIT) from Debian's `dataset-fashion-mnist` package, for the slow
# real-data checks of the image evaluators (benchmarks/bench_fashion_mnist.py,
# tests/test_fashion_mnist_slow.py). The package installs four gzipped IDX files:
#   /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
# Idempotent: does nothing when the four files are already there. Needs root (or sudo) for apt.
# Usage: scripts/fetch_fashion_mnist.sh            (prints the data folder on success)
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

complete() { for f in "${files[@]}"; do [ -s "$dir/$f" ] || return 1; done; }

if complete; then echo "$dir"; exit 0; fi

command -v apt-get >/dev/null 2>&1 \
  || { echo "fetch_fashion_mnist: apt-get not found (needs Debian/Ubuntu's apt to install dataset-fashion-mnist)" >&2; exit 1; }
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n)
  else echo "fetch_fashion_mnist: installing dataset-fashion-mnist needs root (run as root or with passwordless sudo)" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp); trap 'rm -f "$log"' EXIT
"${sudo[@]}" apt-get install -y -qq dataset-fashion-mnist >"$log" 2>&1 \
  || { "${sudo[@]}" apt-get update -qq >>"$log" 2>&1 && "${sudo[@]}" apt-get install -y -qq dataset-fashion-mnist >>"$log" 2>&1; } \
  || { echo "fetch_fashion_mnist: 'apt-get install dataset-fashion-mnist' failed: $(tail -n 1 "$log")" >&2; exit 1; }
complete || { echo "fetch_fashion_mnist: dataset-fashion-mnist is installed but $dir lacks ${files[*]}" >&2; exit 1; }
echo "$dir"
