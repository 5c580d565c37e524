#!/usr/bin/env bash
# The distillation fit of experiment 1's T_train 1.6 LoRA adapter (issue 23), from the repository root:
#   SELFDISTILL_DATA=/path/to/datasets experiments/ssd-qwen0.5b/fit.sh
# 1. Held-out contexts: the adapter trained on the first 256 decontaminated leetcode-train prompts, so the
#    next 32 (prompts 257-288 of the same list, checked by its prompts_sha256) are sampled once at the
#    training truncation (T 1.6, top-k 20, top-p 0.8, max 1,024 tokens), as the training samples were.
# 2. The fit: the base model's target on those 32 held-out and 32 training samples, and the SSD model
#    the experiment evaluated (the adapter merged onto the base model in bf16) against it; step 32 is
#    the adapter's last optimizer step.
set -euo pipefail
PYTHON="${PYTHON:-python}"
SSD="$PYTHON -m selfdistill"
EXP=experiments/ssd-qwen0.5b
PROMPTS=/tmp/fit-exp1/heldout-prompts.jsonl  # the path the committed samples were made from (part of their fingerprint)
mkdir -p "$(dirname $PROMPTS)"
$PYTHON - "$PROMPTS" <<'PY'
import json, sys
from selfdistill.prompts import collect_prompts, prompts_sha256

found = collect_prompts("leetcode-train", None, ["humaneval", "mbpp", "leetcode", "livecodebench"])
assert prompts_sha256(found.prompts) == json.load(open("experiments/ssd-qwen0.5b/runs/samples-17800565d1/manifest.json"))["prompt_source"]["prompts_sha256"]
with open(sys.argv[1], "w") as f:
    for p in found.prompts[256:288]:
        f.write(json.dumps({"id": p.id, "text": p.text, "starter_code": p.starter_code}) + "\n")
PY
$SSD sample --model qwen2.5-coder-0.5b-instruct --prompts "$PROMPTS" --limit 32 --temperature 1.6 --top-k 20 --top-p 0.8 \
  --max-tokens 1024 --max-model-len 2048 --shard-size 32 --output-dir $EXP/runs/samples-heldout
$SSD models merge-lora $EXP/adapter /tmp/fit-exp1/ssd-qwen0.5b
$SSD analyze fit --train-dir $EXP/runs/train-c9a5ab78b4 --heldout $EXP/runs/samples-heldout --train-samples 32 \
  --model /tmp/fit-exp1/ssd-qwen0.5b --step 32 --output-dir $EXP/fit
