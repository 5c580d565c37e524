"""Do the soft targets recomputed in a later sitting (another machine) equal the q the distillation fit
cached earlier? Both are the base model's truncated distribution at T_train, by the same teacher forcing,
at the 128 samples the fit scores. Prints how many positions share the support and how far q differs
there. Run from the repository root: python experiments/ssd-qwen0.5b-full/targets_agree.py"""

import json
from pathlib import Path

import numpy as np

from selfdistill.manifest import read_jsonl
from selfdistill.sample import shard_files, shard_targets

RUNS = Path("experiments/ssd-qwen0.5b-full/runs")
FIT = RUNS / "train-62eed3ce1f/fit"


def side_files(samples: Path) -> dict:
    """(prompt_id, sample_index) -> that record's Targets, from the shards' side files."""
    found = {}
    for shard in shard_files(samples):
        for record, targets in zip(read_jsonl(shard), shard_targets(shard), strict=True):
            found[record["prompt_id"], record["sample_index"]] = targets
    return found


def main() -> None:
    cached = np.load(FIT / "target.npz")
    scored = json.loads((FIT / "manifest.json").read_text())["scored"]
    recomputed = side_files(RUNS / "samples-d5198507ee")
    cached_starts = np.concatenate([[0], np.cumsum(cached["support_len"])])
    positions = same_support = 0
    gaps = []
    for reply, key in enumerate(key for part in scored.values() for key in part):
        targets = recomputed[tuple(key)]
        starts = np.concatenate([[0], np.cumsum(targets.counts)])
        rows = np.flatnonzero(cached["reply"] == reply)
        assert len(rows) == len(targets.counts), f"{key}: {len(rows)} cached, {len(targets.counts)} recomputed"
        for j, row in enumerate(rows):
            a = slice(cached_starts[row], cached_starts[row + 1])
            b = slice(starts[j], starts[j + 1])
            q_cached = dict(zip(cached["support_ids"][a].tolist(), cached["support_q"][a], strict=True))
            q_new = dict(zip(targets.ids[b].tolist(), targets.probs[b], strict=True))
            positions += 1
            if q_cached.keys() == q_new.keys():
                same_support += 1
                gaps.append(max(abs(q_cached[t] - q_new[t]) for t in q_new))
    gaps = np.array(gaps)
    print(
        f"{positions} reply positions of {sum(map(len, scored.values()))} samples: the same support at "
        f"{same_support} ({same_support / positions:.3%}); max |q_cached - q_recomputed| per position there: "
        f"median {np.median(gaps):.1e}, 99.9th percentile {np.quantile(gaps, 0.999):.1e}, largest {gaps.max():.1e} "
        "(the side files store q in float32, which rounds values below 1 by at most 3e-8)"
    )


if __name__ == "__main__":
    main()
