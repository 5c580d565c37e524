"""benchmarks/gpu_check.sh in its dry mode: the GPU check's steps on CPU with a tiny model (the hf
sampler, `ssd train` full and LoRA launched as `ssd run` launches them, the FSDP recipe's resume and
export). Integration: it launches `ssd train` four times, 101 s on the 2-core development machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_gpu_check_passes_in_its_dry_mode(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--workdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout
    for step in ("sample (hf, seeded)", "train full", "train LoRA", "FSDP, 1 process: resume, export"):
        assert step in proc.stdout
