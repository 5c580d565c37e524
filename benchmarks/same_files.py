"""Does a change keep a command's files? Runs one `ssd` command with the package of a git ref and with
this working tree's, each into its own output directory, and compares the two trees file by file:
JSON and JSONL compared as data without the keys that record when, how fast and from which commit
(TIMED below), every other file byte for byte. Prints each file that differs and the counts.

    flock /tmp/selfdistill-heavy.lock nice -n 19 python benchmarks/same_files.py main run --config run.yaml
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what a rerun of the same code changes too: times, speeds, the commit, the absolute output paths
TIMED = {"started_at", "finished_at", "resumed_at", "git_commit", "sessions", "seconds", "wall_seconds"}
SKIPPED = {"library.log"}


def run(ref: str | None, args: list[str], out: Path, work: Path) -> None:
    src = REPO / "src"
    if ref:
        src = work / "ref"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        src = src / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    log = out.with_suffix(".log")
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "selfdistill", *args, f"output_dir={out}"], env=env, stderr=f)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed with {ref or 'the working tree'}; see {log}")


def data(path: Path, root: Path):
    """A file's content for comparison; JSON without TIMED keys, this run's root path written as ROOT."""
    text = path.read_text(errors="replace").replace(str(root), "ROOT")
    if path.suffix not in (".json", ".jsonl"):
        return path.read_bytes() if "ROOT" not in text else text

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMED}
        return [strip(v) for v in x] if isinstance(x, list) else x

    rows = [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else [json.loads(text)]
    return strip(rows)


def main() -> None:
    ref, args = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory(prefix="same-files-") as tmp:
        work = Path(tmp)
        base, head = work / "base", work / "head"
        run(ref, args, base, work)
        run(None, args, head, work)
        files = {p.relative_to(root) for root in (base, head) for p in root.rglob("*") if p.is_file()}
        files = sorted(f for f in files if f.name not in SKIPPED)
        differ = [f for f in files if not ((base / f).is_file() and (head / f).is_file())]
        differ += [f for f in files if f not in differ and data(base / f, base) != data(head / f, head)]
        for f in differ:
            print(f"differs: {f}")
        print(f"{len(files) - len(differ)} of {len(files)} files the same ({ref} and the working tree)")


if __name__ == "__main__":
    main()
