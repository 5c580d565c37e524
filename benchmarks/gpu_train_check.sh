#!/usr/bin/env bash
# A few bf16 training steps on a CUDA GPU: ssd train's path against a plain PyTorch loop, then
# variable-length batches padded and packed; prints tokens/s and MFU (against the bf16 matmul peak
# measured in the same run). No test depends on it; run it on a new GPU machine or after changes
# to train.py.
#
#   benchmarks/gpu_train_check.sh                  # tiny-random (2 layers): plumbing, kernels, bf16 path
#   benchmarks/gpu_train_check.sh qwen2.5-coder-0.5b-instruct 16 1024 10    # a real model: meaningful MFU
#
# Needs a CUDA build of torch with selfdistill installed (pip install -e '.[gpu]'). A machine
# without internet needs the model cache: copy ~/.cache/selfdistill (or point SELFDISTILL_CACHE at a copy).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
MODEL=${1:-tiny-random}
BATCH=${2:-16}
LENGTH=${3:-512}
STEPS=${4:-10}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}")
PY
"$PYTHON" -c "import flash_attn" 2>/dev/null && echo "flash_attn installed: packing uses varlen flash attention" \
    || echo "flash_attn not installed: packing uses sdpa with a block-diagonal mask"
HF_HUB_OFFLINE=1 "$PYTHON" benchmarks/train_throughput.py --model "$MODEL" --batch "$BATCH" --length "$LENGTH" --steps "$STEPS"
