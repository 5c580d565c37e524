"""Does the soft run, restarted from step 0 on another machine, repeat the run that the first machine lost?
Compares the two runs' loss and grad norm at every step both logged (loss.csv) and the distillation fit's
per-position scores of their step-20 models (fit/step-20.npz: every held-out and training reply position),
value for value. Run from the repository root: python experiments/ssd-qwen0.5b-full/rebuild_agrees.py"""

import csv
from pathlib import Path

import numpy as np

RUNS = Path("experiments/ssd-qwen0.5b-full/runs")
LOST, REBUILT = RUNS / "lost-train-2080111fe9", RUNS / "train-2080111fe9"
STEP = 20


def logged(run: Path) -> dict[int, tuple[str, str]]:
    with open(run / "loss.csv") as f:
        return {int(r["step"]): (r["loss"], r["grad_norm"]) for r in csv.DictReader(f)}


def main() -> None:
    lost, rebuilt = logged(LOST), logged(REBUILT)
    common = sorted(lost.keys() & rebuilt.keys())
    differ = [step for step in common if lost[step] != rebuilt[step]]
    print(f"loss.csv: steps {common[0]}-{common[-1]} in both; loss and grad norm differ at {len(differ)} {differ}")
    a, b = np.load(LOST / f"fit/step-{STEP}.npz"), np.load(REBUILT / f"fit/step-{STEP}.npz")
    for key in a.files:
        gap = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64)).max()
        same = np.array_equal(a[key], b[key])
        print(f"fit step {STEP}, {key}: {len(a[key])} positions, equal: {same}, max |diff| {gap:.3g}")


if __name__ == "__main__":
    main()
