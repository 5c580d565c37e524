"""Rows of data files: the one reader of every file the package takes in (benchmark data, training
prompts, replies made elsewhere, its own JSONL outputs), with one error policy.

    read(source, split, config=None, errors=None) -> Iterator[(where, row)]
    jsonl(path, errors=None) -> Iterator[(line number, row)]     a JSONL file alone
    hub_files(repo_id, filenames, cached_only=False) -> [Path]   raw files of a hub dataset, through the hub cache

A source is a .jsonl file, a .json file (a list of objects), a .parquet file (any of them gzipped: .gz),
a directory of .parquet files (all of them, in name order), another local directory (a dataset as the
hub lays it out: `split` picks its test.jsonl, say) or a Hugging Face hub id. The last two are loaded
with `datasets`, for users who are online; `config` and `split` apply to them only.

`where` names a row in messages: "file:line" (JSONL), "file[i]" (a JSON list), "file[row i]" (parquet),
"source[split]:i" (datasets). A malformed row raises "where: what is wrong" (as RowError, or the
caller's own error class: `raises`); given a list `errors`, it is appended there as {"where",
"reason"} and skipped instead, for callers that report every bad row and go on. A source that cannot
be read at all always raises.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from . import SelfdistillError

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name


class RowError(SelfdistillError, ValueError):
    pass


def read(
    source: str | Path,
    split: str,
    config: str | None = None,
    errors: list[dict] | None = None,
    raises: type[Exception] = RowError,
) -> Iterator[tuple[str, dict]]:
    """Every row of `source`; errors are `raises` (a caller's own error class), or collected in `errors`."""
    path = Path(source)
    name = path.name.removesuffix(".gz")
    if path.is_dir() and (parquet := sorted(path.rglob("*.parquet"))):
        for f in parquet:
            yield from _parquet(f)
    elif path.is_dir() or (not path.exists() and HUB_ID.fullmatch(str(source))):
        yield from _datasets(str(source), config, split)
    elif not path.exists():
        raise raises(f"{source}: no such file, and not a hub id (owner/name)")
    elif name.endswith(".jsonl"):
        for i, row in jsonl(path, errors, raises):
            yield f"{path}:{i}", row
    elif name.endswith(".json"):
        yield from _json_list(path, errors, raises)
    elif name.endswith(".parquet"):
        yield from _parquet(path)
    else:
        raise raises(f"{path}: unsupported file type (use .jsonl, .json or .parquet, optionally .gz)")


def jsonl(
    path: str | Path, errors: list[dict] | None = None, raises: type[Exception] = RowError
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file (.gz too)."""
    path = Path(path)
    with _open(path) as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.rstrip(b"\r\n"))  # without its newline, an error's column is one of this line
            except json.JSONDecodeError as e:
                _bad(f"{path}:{i}", f"invalid JSON at column {e.colno}: {e.msg}", errors, raises)
                continue
            except UnicodeDecodeError as e:
                _bad(f"{path}:{i}", f"not UTF-8: {e}", errors, raises)
                continue
            if not isinstance(row, dict):
                _bad(f"{path}:{i}", f"expected a JSON object, got {type(row).__name__}", errors, raises)
                continue
            yield i, row


def _bad(where: str, reason: str, errors: list[dict] | None, raises: type[Exception]) -> None:
    if errors is None:
        raise raises(f"{where}: {reason}")
    errors.append({"where": where, "reason": reason})


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _json_list(path: Path, errors: list[dict] | None, raises: type[Exception]) -> Iterator[tuple[str, dict]]:
    with _open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise raises(f"{path}:{e.lineno}: invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise raises(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        if isinstance(row, dict):
            yield f"{path}[{i}]", row
        else:
            _bad(f"{path}[{i}]", f"expected a JSON object, got {type(row).__name__}", errors, raises)


def _parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    with _open(path) as f:
        table = pq.read_table(io.BytesIO(f.read()))
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}[row {i}]", row


def hub_files(
    repo_id: str, filenames: tuple[str, ...] | list[str], cached_only: bool = False, raises: type[Exception] = RowError
) -> list[Path]:
    """Raw files of a hub dataset repository (for datasets that `datasets` cannot load, such as a loading
    script), through huggingface_hub's cache: downloaded once, then read from the cache, offline too
    (HF_HUB_OFFLINE=1). `cached_only` never touches the network; a file missing there raises."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError

    if cached_only:
        found = [huggingface_hub.try_to_load_from_cache(repo_id, f, repo_type="dataset") for f in filenames]
        missing = [f for f, path in zip(filenames, found, strict=True) if not isinstance(path, str)]
        if missing:
            raise raises(f"{repo_id}: {', '.join(missing)} not in the hub cache ({constants.HF_HUB_CACHE})")
        return [Path(path) for path in found]
    try:
        return [Path(huggingface_hub.hf_hub_download(repo_id, f, repo_type="dataset")) for f in filenames]
    except (OSError, EntryNotFoundError) as e:  # offline, unreachable, or not in the repository
        raise raises(
            f"{repo_id}: cannot fetch {', '.join(filenames)} from the hub: "
            f"{type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None


def _datasets(source: str, config: str | None, split: str) -> Iterator[tuple[str, dict]]:
    import datasets

    for i, row in enumerate(datasets.load_dataset(source, config, split=split)):
        yield f"{source}[{split}]:{i}", dict(row)
