#!/usr/bin/env bash
# Experiment 2's remaining stages, in the order the README's commands give them, as one resumable job:
# rerun it in every sitting (it is killed when a sitting ends) and it picks up where the stages stopped.
#
#   nohup experiments/ssd-qwen0.5b-full/continue.sh >> experiments/ssd-qwen0.5b-full/continue.log 2>&1 &
#
# 1. training (command 3) resumes first, so its sitting's matmul peak is measured on a quiet machine;
# 2. the distillation fits of steps 20 and 40 run beside it as their snapshots appear (a fit needs ~3.3 GB
#    next to training's ~18 GB); at step 40 the pre-registered stop rule (stop_rule.py) decides: if it
#    triggers, training stops and the same samples are trained with soft targets (the README's fallback);
# 3. the fit of the finished model, then both evals, Figure 6 and the run report (`ssd run`: finished
#    stages are reused), then REPORT.md.
# Every step resumes or reuses what is finished: fits reuse their cached scores (fit/step-N.npz).
set -euo pipefail
cd "$(dirname "$0")/../.."
E=experiments/ssd-qwen0.5b-full
R=$E/runs
TRAIN=$R/train-62eed3ce1f
SSD=.venv/bin/ssd
say() { echo "[$(date -u +%FT%TZ)] $*"; }
fit() { say "fit $*"; nice -n 5 $SSD analyze fit --train-dir $TRAIN --train-samples 64 "$@" >> $E/fit.log 2>&1; }
stop_rule() { rule=0; python3 $E/stop_rule.py --step 40 || rule=$?; [ $rule = 1 ]; }  # exit 2: no row yet
soft() {
  say "the stop rule triggered at step 40: the same samples with soft targets"
  $SSD samples targets $R/samples-d5198507ee >> $E/targets.log 2>&1
  $SSD run --config $E/leetcode.yaml train.objective=soft >> $E/run-soft.log 2>&1
  say "done: the soft-target run; the README says what to report"
  exit 0
}

stop_rule && soft  # decided in an earlier sitting
if ! grep -q '"finished_at": "' $TRAIN/manifest.json; then
  say "training: resuming"
  $SSD train --config $E/leetcode.yaml --samples $R/samples-d5198507ee --output-dir $TRAIN >> $E/train.log 2>&1 &
  training=$!
  for step in 20 40; do
    until [ -d $TRAIN/snapshots/step-$step ] || ! kill -0 $training 2>/dev/null; do sleep 60; done
    if [ -d $TRAIN/snapshots/step-$step ]; then fit --step $step; fi
  done
  if stop_rule; then
    kill $training && wait $training || true
    soft
  fi
  wait $training
  say "training: finished"
fi
fit  # the exported model
say "evals: ssd run"
$SSD run --config $E/leetcode.yaml >> $E/run.log 2>&1
$SSD report $E/leetcode.yaml --out $E
say "done: $E/REPORT.md"
