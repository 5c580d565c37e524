#!/usr/bin/env bash
# One GPU node, checked in one run of under 10 minutes on one GPU: the hf sampler on CUDA, `ssd train`
# full and LoRA in bf16, FSDP with sharded checkpoints, resume and export; tokens/s and MFU against the
# GPU's bf16 peak. benchmarks/gpu_check.py says exactly what each step runs and checks.
#
#   benchmarks/gpu_check.sh             # a CUDA machine
#   benchmarks/gpu_check.sh --dry-run   # the same steps on CPU with a tiny model (also: GPU_CHECK_DRY=1)
#
# Needs python with a CUDA build of torch, transformers, peft and accelerate. It builds its model
# itself (no download) and runs selfdistill from src/ (no install). `ssd train` also needs TRL, datasets
# and matplotlib, which benchmarks/gpu_check_wheels.txt lists with what they bring beyond the four
# above. For a machine without them and without internet, download the wheels on a machine with
# internet and the GPU machine's Python version and platform:
#   pip download --no-deps --only-binary=:all: -d .whl -r benchmarks/gpu_check_wheels.txt
# and copy .whl/ into the repository root: this script then installs them (pip --no-index).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --find-links .whl -r benchmarks/gpu_check_wheels.txt
fi
if ! "$PYTHON" -c "import trl, datasets, matplotlib" 2>/dev/null; then
  echo "ssd train needs trl, datasets and matplotlib: put their wheels in .whl/ (see the top of $0)" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" benchmarks/gpu_check.py "$@"
