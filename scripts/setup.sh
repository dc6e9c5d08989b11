#!/usr/bin/env bash
# One-time set-up on a fresh machine: system data package, PyTorch from the local wheel, the package.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST for the built-in benchmark (Debian package; skipped where apt is unavailable).
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: apt-get not found; set CAPTUM_REALTIME_MASK_FASHION_MNIST to the IDX folder" >&2
  fi
fi

# PyTorch pinned to the build this project is tested with (pip finds it on the local disk here).
python -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null \
  || python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"

python -m pip install -q -e ".[test,docs]"
