"""benchmarks/gpu_check.sh: what travels to a lent GPU machine stays small, and the check passes in its
dry mode (every step on CPU at tiny sizes: the hf sampler, `ssd train` full and LoRA launched as `ssd
run` launches them, the long-sequence memory probe, GPT-OSS sink gradients, the FSDP recipe's resume
and export)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAVEL_LIMIT_MIB = 50  # the device tool carries 64 MiB per call: the tracked tree, plus the wheels (~2.3 MB) and room


def test_the_tracked_tree_that_travels_to_a_gpu_machine_stays_under_50_mib():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    sizes = {f: (REPO / f).stat().st_size for f in files if f and (REPO / f).is_file()}
    total = sum(sizes.values()) / 2**20
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    assert total < TRAVEL_LIMIT_MIB, f"tracked files total {total:.1f} MiB; largest: " + ", ".join(
        f"{f} ({sizes[f] / 2**20:.1f} MiB)" for f in largest
    )


def test_the_wheels_list_names_only_pinned_packages_the_check_installs():
    pins = [
        line.split("#")[0].strip() for line in (REPO / "benchmarks" / "gpu_check_wheels.txt").read_text().splitlines()
    ]
    pins = [p for p in pins if p]
    assert sorted(p.split("==")[0] for p in pins) == ["datasets", "dill", "multiprocess", "trl", "xxhash"]
    assert all(p.count("==") == 1 for p in pins)  # pinned: `pip download` fetches exactly these


def test_the_steps_budgets_fit_the_8_minutes_and_name_every_step():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_check

    assert sum(gpu_check.BUDGET_S.values()) <= gpu_check.TOTAL_BUDGET_S == 480
    steps = set(re.findall(r'step\(\s*"([^"]+)"', (REPO / "benchmarks" / "gpu_check.py").read_text()))
    assert steps == set(gpu_check.BUDGET_S)


@pytest.mark.integration
def test_gpu_check_passes_in_its_dry_mode(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--workdir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout
    lines = {}
    for step in ("environment", "bf16 matmul peak", "model", "sample (hf, seeded)", "train full, 1 process",
                 "train LoRA, 1 process", "long-sequence memory, FSDP2", "GPT-OSS sinks: eager vs flex",
                 "FSDP, 1 process: resume, export"):  # fmt: skip
        lines[step] = next((line for line in proc.stdout.splitlines() if line.startswith(step + ": ")), "")
        assert "budgeted" in lines[step], f"no line for step {step!r}"
    assert (
        "MFU" in lines["train full, 1 process"]
        and "per layer" in lines["long-sequence memory, FSDP2"]
        and "ssd plan" in lines["long-sequence memory, FSDP2"]
    )
    assert "sinks of all 2 layers get a gradient" in lines["GPT-OSS sinks: eager vs flex"]
