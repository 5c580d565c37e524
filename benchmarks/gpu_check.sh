#!/usr/bin/env bash
# One GPU node, checked in one run of under 8 minutes on one H100: environment, bf16 matmul peak, the hf
# sampler on CUDA, `ssd train` full and LoRA (tokens/s, MFU), one FSDP2 training step at 69,632 tokens
# (peak memory per layer), GPT-OSS sink gradients (eager vs flex_attention), FSDP sharded checkpoints,
# resume and export. benchmarks/gpu_check.py says exactly what each step runs and checks.
#
#   benchmarks/gpu_check.sh             # a CUDA machine
#   benchmarks/gpu_check.sh --dry-run   # the same steps on CPU at tiny sizes (also: GPU_CHECK_DRY=1)
#
# Needs python with a CUDA build of torch, transformers, accelerate, peft, pandas, pyarrow and
# matplotlib. It builds its models itself (no download) and runs selfdistill from src/ (no install).
# What else `ssd train` imports is listed in benchmarks/gpu_check_wheels.txt; for a machine without
# internet, fetch those wheels beforehand (about 2.3 MB; Python 3.12, Linux x86_64):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
#       --platform manylinux_2_28_x86_64 -d .whl -r benchmarks/gpu_check_wheels.txt
# .whl/ is git-ignored: name it in what travels to the machine. This script installs, from .whl/ and
# into .whl/site (put on PYTHONPATH; the machine's own packages are left alone), the listed packages that
# do not import there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
missing=$("$PYTHON" - <<'PY'
import importlib.util
for line in open("benchmarks/gpu_check_wheels.txt"):
    name = line.split("#")[0].strip().split("==")[0]
    if name and importlib.util.find_spec(name) is None:
        print(name)
PY
)
if [ -n "$missing" ]; then
  if [ ! -d .whl ]; then
    echo "missing $(echo $missing): fetch their wheels into .whl/ (see the top of $0)" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --find-links .whl --target .whl/site \
    $(grep -E "^($(echo $missing | tr ' ' '|'))==" benchmarks/gpu_check_wheels.txt)
fi
export PYTHONPATH="$PWD/src${missing:+:$PWD/.whl/site}${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# everything `ssd train` needs imports, or say what does not before any GPU time is spent
"$PYTHON" -c "
import importlib
missing = []
for name in ('torch', 'transformers', 'accelerate', 'peft', 'trl', 'datasets', 'matplotlib', 'selfdistill.train', 'selfdistill.sample'):
    try:
        importlib.import_module(name)
    except Exception as e:
        missing.append(f'{name} ({type(e).__name__}: {e})')
if missing:
    raise SystemExit('cannot import: ' + '; '.join(missing))
import torch, transformers, accelerate, peft, trl, datasets
print(f'python packages: torch {torch.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}, '
      f'peft {peft.__version__}, trl {trl.__version__}, datasets {datasets.__version__}', flush=True)
"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
