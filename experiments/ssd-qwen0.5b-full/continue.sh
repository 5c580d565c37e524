#!/usr/bin/env bash
# Experiment 2's remaining stages, in the order the README's commands give them, as one resumable job:
# rerun it in every sitting (it is killed when a sitting ends) and it picks up where the stages stopped.
#
#   nohup experiments/ssd-qwen0.5b-full/continue.sh >> experiments/ssd-qwen0.5b-full/continue.log 2>&1 &
#
# 1. training (command 3) resumes first, so its sitting's matmul peak is measured on a quiet machine;
# 2. the distillation fits of steps 20 and 40 run beside it as their snapshots appear (a fit needs ~3.3 GB
#    next to training's ~18 GB; training pauses for the hard run's step 40, whose fit decides); at step 40
#    the pre-registered stop rule (stop_rule.py) decides: if it triggers, training stops and the same
#    samples are trained with soft targets (leetcode-soft.yaml: the README's fallback, at the paper's lr),
#    with the same fits;
# 3. the fit of the finished model, then both evals, Figure 6 and the run report (`ssd run`: finished
#    stages are reused), then REPORT.md, then HumanEval+ greedy of both models (continuity.json).
# Every step resumes or reuses what is finished: fits reuse their cached scores (fit/step-N.npz).
set -euo pipefail
cd "$(dirname "$0")/../.."
E=experiments/ssd-qwen0.5b-full
R=$E/runs
TRAIN=$R/train-62eed3ce1f
SSD=.venv/bin/ssd
FIT_ARGS=
# A sitting may get a fresh work tree (ignored files gone) on a machine that kept $HOME, or a fresh machine:
# the stage files too big for git live under $STATE and the work tree links to them, so a kept machine
# resumes where the last sitting stopped.
STATE=${SELFDISTILL_STATE:-$HOME/.cache/selfdistill/state/$E}
outside() {  # outside PATH...: PATH becomes a link to the same path under $STATE, which keeps its content
  for p; do
    s=$STATE/${p#$R/}
    mkdir -p "$(dirname $s)" "$(dirname $p)"
    if [ -e $p ] && [ ! -L $p ]; then rm -rf $s; mv $p $s; fi
    [ -e $s ] || mkdir $s  # a directory that a stage has yet to write into
    ln -sfn $s $p
  done
}
say() { echo "[$(date -u +%FT%TZ)] $*"; }
# on a fresh machine: the base model at the path the stage manifests recorded (rebuilt from its GGUF)
$SSD models fetch qwen2.5-coder-0.5b-instruct > /dev/null
fit() { dir=$1; shift; say "fit $dir $*"; nice -n 5 $SSD analyze fit --train-dir $dir --train-samples 64 "$@" >> $E/fit.log 2>&1; }
await() { while kill -0 $1 2>/dev/null; do sleep 30; done; }  # also a training an earlier continue.sh started
stop_rule() { rule=0; python3 $E/stop_rule.py --step 40 || rule=$?; [ $rule = 1 ]; }  # exit 2: no row yet
finished() { grep -q '"finished_at": "' $1/manifest.json 2>/dev/null; }
# Train CONFIG into DIR unless finished (or join the training already at it), fitting its step-20 and
# step-40 snapshots beside it as they appear; leaves the training's pid in $training (empty when there was
# nothing to train). $FIT_ARGS: extra options of its fits.
train() {
  training=
  finished $2 && return
  training=$(pgrep -f -- "ssd train .*--output-dir $2" | head -1 || true)
  if [ -z "$training" ]; then
    # checkpoints of an earlier sitting; a new run directory takes the links once it has its manifest
    [ ! -f $2/manifest.json ] || outside $2/checkpoints $2/snapshots
    say "training $1: resuming"
    $SSD train --config $1 --samples $R/samples-d5198507ee --output-dir $2 >> $E/train${3:-}.log 2>&1 &
    training=$!
  fi
  until [ -f $2/manifest.json ] || ! kill -0 $training 2>/dev/null; do sleep 5; done
  [ ! -f $2/manifest.json ] || outside $2/checkpoints $2/snapshots
  for step in 20 40; do
    until [ -d $2/snapshots/step-$step ] || ! kill -0 $training 2>/dev/null; do sleep 60; done
    [ -d $2/snapshots/step-$step ] || continue
    # the hard run's step-40 fit decides whether it goes on (the stop rule): it runs alone, training paused
    [ $2 != $TRAIN ] || [ $step != 40 ] || kill -STOP $training
    fit $2 --step $step $FIT_ARGS || { kill -CONT $training 2>/dev/null; exit 1; }
    kill -CONT $training 2>/dev/null || true
  done
}
# HumanEval+ greedy of the base model and of the evaluated SSD model in TRAIN_DIR $1 (secondary endpoint),
# in the precision `ssd run` chose for the LeetCode evals, then their paired comparison
continuity() {
  dtype=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['config']['dtype'])" $R/eval-ssd/manifest.json)
  say "HumanEval+ greedy ($dtype)"
  $SSD eval --config $E/humaneval_plus_greedy.yaml dtype=$dtype output_dir=$R/humaneval-plus-base-$dtype >> $E/continuity.log 2>&1
  $SSD eval --config $E/humaneval_plus_greedy.yaml dtype=$dtype model=$1/model output_dir=$R/humaneval-plus-$(basename $1) \
    >> $E/continuity.log 2>&1
  .venv/bin/python -c "import json, sys; from selfdistill.results import compare
print(json.dumps(compare(*sys.argv[1:])['by_temperature'], indent=1))" $R/humaneval-plus-base-$dtype $R/humaneval-plus-$(basename $1) \
    | tee $E/continuity.json
}
soft() {
  say "the stop rule triggered at step 40: the same samples with soft targets at the paper's lr (leetcode-soft.yaml)"
  await "$(pgrep -f -- "ssd samples targets $R/samples-d5198507ee" | head -1 || true)"  # one already running
  $SSD samples targets $R/samples-d5198507ee >> $E/targets.log 2>&1  # committed (~9 MB): reruns finish at once
  # its training directory as `ssd run` derives it, now that the samples hold their targets
  SOFT=$(.venv/bin/python -c "from selfdistill.config import load_run_config as c; from selfdistill.pipeline import Stages
print(Stages.of(c(config_file='$E/leetcode-soft.yaml')).dirs['train'])")
  FIT_ARGS="--target-from $TRAIN/fit"  # the same samples scored against the same base model
  train $E/leetcode-soft.yaml $SOFT -soft
  await "$training"
  finished $SOFT || { say "training stopped before its last step: see train-soft.log"; exit 1; }
  outside $SOFT/model  # the evals read it, maybe sittings later
  fit $SOFT $FIT_ARGS  # the exported model
  say "evals: ssd run (soft)"
  $SSD run --config $E/leetcode-soft.yaml >> $E/run-soft.log 2>&1
  $SSD report $E/leetcode-soft.yaml --out $E/soft
  $SSD report $E/leetcode.yaml --out $E
  continuity $SOFT
  say "done: $E/soft/REPORT.md"
  exit 0
}

stop_rule && soft  # decided in an earlier sitting
train $E/leetcode.yaml $TRAIN
if [ -n "$training" ]; then
  if stop_rule; then
    kill $training || true
    await $training
    soft
  fi
  await $training
  say "training: finished"
fi
fit $TRAIN  # the exported model
say "evals: ssd run"
$SSD run --config $E/leetcode.yaml >> $E/run.log 2>&1
$SSD report $E/leetcode.yaml --out $E
continuity $TRAIN
say "done: $E/REPORT.md"
