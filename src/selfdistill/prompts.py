"""Training prompts for `ssd sample`: loaders, exact dedup, decontamination. The chat formats that show
them to a model, shared with evaluation, are in chat.py.

    load_prompts(source, field=None, limit=None) -> [Prompt]          unique prompts of a source
    collect_prompts(source, field, decontaminate, selection) -> PromptSet   the same, plus everything removed and why

A source is a named dataset (DATASETS), or anything rows.read reads: a local .jsonl/.json/.parquet file
(or .gz of one), a directory, or a Hugging Face hub id (for users who are online). Named datasets read
their local copy from the data directory ($SELFDISTILL_DATA, else ../shared/datasets) when it is there,
else their upstream hub dataset. A malformed row is reported with its file and line and skipped; the
rest loads. Prompts are deduplicated exactly (whitespace-normalized statement + starter code, first one
wins; selection "paper", the paper's rule for rStar-Coder seed_sft, keeps only rows with `is_passed`
true and deduplicates by the question text alone: ~10.2k prompts where "all" leaves more than 30k), then
decontaminated against evaluation benchmark data (DecontaminationTarget: a benchmark, its file or hub
id, a release window) by problem id and by 13-gram overlap. An entry at a benchmark's own data that
cannot be loaded here (offline, no local copy: benchmarks.DataUnavailable) is skipped and reported as
not checked (`PromptSet.unchecked`, in prompts_report.json and the log); a file or hub id named in an
entry must load.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import SelfdistillError, rows
from .benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    DataUnavailable,
    benchmark_texts,
    data_dir,
    get,
    in_task_ids,
    parse_mbpp,
)
from .manifest import hash_inputs

PROMPT_SELECTIONS = ("all", "paper")


class PromptError(SelfdistillError, ValueError):
    pass


@dataclass
class Prompt:
    id: str
    text: str  # the problem statement
    starter_code: str | None = None  # a function or class stub the answer must complete
    metadata: dict = field(default_factory=dict)  # where: "file:line" of the row


# ---------------------------------------------------------------------------- named datasets


def _leetcode(row: dict) -> dict:
    # v0.2.0 (the shared copy) keeps the full statement, examples included, in meta.question_title and
    # the stub in meta.lang_code; later hub versions have problem_description and starter_code.
    meta = row.get("meta") or {}
    return {
        "id": row["task_id"],
        "text": row.get("problem_description") or meta["question_title"],
        "starter_code": row.get("starter_code") or meta.get("lang_code"),
    }


def _mbpp(row: dict) -> dict:
    problem = parse_mbpp(row)  # the prompt MBPP's evaluation shows: the asserts name the function
    return {"id": problem.id, "text": problem.statement, "starter_code": problem.starter_code}


def _rstar(row: dict) -> dict:
    return {"id": str(row["question_id"]), "text": row["question"], "starter_code": row.get("starter_code")}


@dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    parse: Callable[[dict], dict]  # row -> {"id", "text", "starter_code"}
    local: str  # file or directory under the data directory
    hub: tuple[str, str | None, str]  # (hub id, config, split) for online users
    task_ids: tuple[int, int] | None = None  # keep rows with task_id in this range (MBPP's splits)


DATASETS: dict[str, NamedDataset] = {
    d.name: d
    for d in [
        NamedDataset(
            "leetcode-train",
            "LeetCodeDataset v0.2.0 train (1890 problems with starter code)",
            _leetcode,
            "leetcode-v0.2.0-train.jsonl.gz",
            ("newfacade/LeetCodeDataset", None, "train"),
        ),
        NamedDataset(
            "mbpp-train",
            "MBPP train split (task ids 601-974)",
            _mbpp,
            "mbpp.jsonl",
            ("google-research-datasets/mbpp", "full", "train"),
            (601, 974),
        ),
        NamedDataset(
            "mbpp-validation",
            "MBPP validation split (task ids 511-600)",
            _mbpp,
            "mbpp.jsonl",
            ("google-research-datasets/mbpp", "full", "validation"),
            (511, 600),
        ),
        NamedDataset(
            "mbpp-prompt",
            "MBPP prompt split (task ids 1-10)",
            _mbpp,
            "mbpp.jsonl",
            ("google-research-datasets/mbpp", "full", "prompt"),
            (1, 10),
        ),
        NamedDataset(
            "rstar-coder-seed-sft",
            "rStar-Coder seed_sft, the paper's prompts (~10.2k with prompt_selection=paper; online)",
            _rstar,
            "rstar-coder-seed-sft",
            ("microsoft/rStar-Coder", "seed_sft", "train"),
        ),
    ]
}


# ---------------------------------------------------------------------------- fields of a row


def _get(row: dict, dotted: str):
    """row["a"]["b"] for "a.b"; KeyError names the missing part."""
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


TEXT_FIELDS = ("question", "statement", "prompt", "problem", "text", "query")  # tried in order for plain files
ID_FIELDS = ("id", "task_id", "question_id", "problem_id")


def _generic(row: dict, text_field: str | None, where: str) -> dict:
    if text_field is None:
        text_field = next((f for f in TEXT_FIELDS if f in row), None)
        if text_field is None:
            raise KeyError(f"one of {', '.join(TEXT_FIELDS)} (or set prompt_field)")
    id_field = next((f for f in ID_FIELDS if row.get(f) is not None), None)
    return {
        "id": str(row[id_field]) if id_field else where.rsplit("/", 1)[-1],
        "text": _get(row, text_field),
        "starter_code": row.get("starter_code"),
    }


@dataclass
class PromptSet:
    """Unique prompts of a source, and the record of what was removed and why (for the manifest)."""

    prompts: list[Prompt]
    source: str  # what was read: a path or hub id
    source_sha256: str | None  # of the file(s), when local
    rows: int = 0
    selection: str = "all"  # PROMPT_SELECTIONS
    not_passed: int = 0  # rows left out by selection "paper" (is_passed false)
    errors: list[dict] = field(default_factory=list)  # {"where": "file:line", "reason"}
    duplicates: list[dict] = field(default_factory=list)  # {"id", "duplicate_of"}
    contaminated: list[dict] = field(default_factory=list)  # {"id", "entry", "benchmark", "problem_id", "reason"}
    decontamination: list[dict] = field(
        default_factory=list
    )  # per entry: source, window, problems checked, overlap; or why not checked

    @property
    def unchecked(self) -> list[dict]:
        """The decontamination entries skipped because their data cannot be loaded here."""
        return [c for c in self.decontamination if c.get("not_checked")]

    def summary(self) -> dict:
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "rows": self.rows,
            "errors": len(self.errors),
            "selection": self.selection,
            "not_passed_removed": self.not_passed,
            "duplicates_removed": len(self.duplicates),
            "contaminated_removed": len(self.contaminated),
            "contaminated_by_benchmark": dict(Counter(c["benchmark"] for c in self.contaminated)),
            "decontamination": self.decontamination,
            "prompts": len(self.prompts),
            "prompts_sha256": prompts_sha256(self.prompts),
        }


def prompts_sha256(prompts: list[Prompt]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.id, p.text, p.starter_code]).encode() + b"\n")
    return h.hexdigest()


def _source_rows(
    source: str, errors: list[dict]
) -> tuple[str, str | None, Iterator[tuple[str, dict]], NamedDataset | None]:
    """(what is read, its sha256 if local, its rows, the named dataset if any); a malformed row goes to `errors`."""
    named = DATASETS.get(source)
    if named:
        hub_id, config, split = named.hub
        try:
            local = data_dir() / named.local
        except BenchmarkError:
            local = None
        if local is not None and local.exists():
            return (
                str(local),
                hash_inputs([local])[str(local)],
                rows.read(local, split, None, errors, PromptError),
                named,
            )
        return (
            f"{hub_id}:{config or 'default'}:{split}",
            None,
            rows.read(hub_id, split, config, errors, PromptError),
            named,
        )
    path = Path(source)
    if path.exists():
        return str(path), hash_inputs([path])[str(path)], rows.read(path, "train", None, errors, PromptError), None
    if rows.HUB_ID.fullmatch(source):
        return source, None, rows.read(source, "train", None, errors, PromptError), None
    import difflib

    hint = difflib.get_close_matches(source, list(DATASETS), n=1)
    raise PromptError(
        f"prompts {source!r}: no such file, not a named dataset"
        + (f" (did you mean {hint[0]!r}?)" if hint else f" ({', '.join(DATASETS)})")
        + ", and not a hub id (owner/name)"
    )


def collect_prompts(
    source: str, field: str | None = None, decontaminate: list[str] | tuple = (), selection: str = "all"
) -> PromptSet:
    """Read, select, parse, deduplicate and decontaminate; every skipped row and removed prompt is recorded."""
    if selection not in PROMPT_SELECTIONS:
        raise PromptError(f"prompt_selection {selection!r}: choose one of {', '.join(PROMPT_SELECTIONS)}")
    errors: list[dict] = []
    what, sha, source_rows, named = _source_rows(source, errors)
    prompts, n_rows, not_passed = [], 0, 0
    for where, row in source_rows:
        n_rows += 1
        try:
            if named and not in_task_ids(row, named.task_ids):
                continue
            if selection == "paper" and row["is_passed"] is not True:  # a row without the field is malformed here
                not_passed += 1
                continue
            fields = _generic(row, field, where) if field or not named else named.parse(row)
            text, starter = fields["text"], fields["starter_code"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"empty or non-text statement ({type(text).__name__})")
            if starter is not None and not isinstance(starter, str):
                raise ValueError(f"starter_code is {type(starter).__name__}, expected text")
        except KeyError as e:
            errors.append({"where": where, "reason": f"missing field {e.args[0]}"})
            continue
        except (ValueError, TypeError, SyntaxError) as e:
            errors.append({"where": where, "reason": f"{type(e).__name__}: {e}"})
            continue
        prompts.append(Prompt(str(fields["id"]), text, starter or None, {"where": where}))
    if not prompts:
        raise PromptError(
            f"{what}: no usable prompts ({n_rows} rows, {len(errors)} malformed"
            + (f"; first: {errors[0]['where']}: {errors[0]['reason']}" if errors else "")
            + ")"
        )
    result = PromptSet(prompts, what, sha, n_rows, selection, not_passed, errors)
    result.prompts, result.duplicates = dedup(
        prompts, errors, _question if selection == "paper" else _statement_and_starter
    )
    if decontaminate:
        result.prompts, result.contaminated, result.decontamination = decontaminate_prompts(
            result.prompts, list(decontaminate)
        )
    return result


def load_prompts(source: str, field: str | None = None, limit: int | None = None) -> list[Prompt]:
    """The unique prompts of a source (first `limit`); malformed rows are skipped with a warning."""
    import warnings

    found = collect_prompts(source, field)
    for e in found.errors:
        warnings.warn(f"{e['where']}: {e['reason']} (skipped)", stacklevel=2)
    return found.prompts[:limit] if limit is not None else found.prompts


# ---------------------------------------------------------------------------- dedup, decontamination


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _statement_and_starter(p: Prompt) -> str:
    return _normalized(p.text) + "\0" + _normalized(p.starter_code or "")


def _question(p: Prompt) -> str:
    return p.text  # the paper's rule: the question text as it is, starter code aside


def dedup(
    prompts: list[Prompt], errors: list[dict], key_of: Callable[[Prompt], str] = _statement_and_starter
) -> tuple[list[Prompt], list[dict]]:
    """Duplicates (equal `key_of`: by default the whitespace-normalized statement and starter code) go; the
    first stays. A different statement under an id already taken is an error (ids key seeds and records)."""
    first: dict[str, str] = {}
    taken: dict[str, str] = {}
    kept, removed = [], []
    for p in prompts:
        key = key_of(p)
        if key in first:
            removed.append({"id": p.id, "duplicate_of": first[key], "where": p.metadata.get("where")})
        elif p.id in taken:
            errors.append(
                {
                    "where": p.metadata.get("where"),
                    "reason": f"id {p.id!r} already names another statement (at {taken[p.id]})",
                }
            )
        else:
            first[key], taken[p.id] = p.id, p.metadata.get("where")
            kept.append(p)
    return kept, removed


NGRAM = 13  # words, as in GPT-3's and most later training-set decontamination
MIN_OVERLAP = 0.2  # share of a statement's 13-grams inside one benchmark problem that marks it contaminated


def _ngrams(text: str, n: int = NGRAM) -> set[int]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    if len(words) < n:
        words = words + [""] * (n - len(words))  # a short text is one n-gram: itself
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


# An entry of SampleConfig.decontaminate: NAME (a registry benchmark, its default data), NAME:SOURCE (that
# benchmark read from a file or hub id), or a registry benchmark's hub id; any of them with @FROM..TO, a
# release-date window (YYYY-MM-DD, either side may be empty) as an eval's release_from/release_to.
_WINDOW = re.compile(r"@(\d{4}-\d{2}-\d{2})?\.\.(\d{4}-\d{2}-\d{2})?$")


@dataclass(frozen=True)
class DecontaminationTarget:
    benchmark: str  # a registry name (benchmarks.BENCHMARKS)
    source: str | None = None  # a file or hub id; None = the registry's default data
    release_from: str | None = None
    release_to: str | None = None

    @classmethod
    def parse(cls, entry: str) -> DecontaminationTarget:
        head, window = entry, (None, None)
        if m := _WINDOW.search(entry):
            head, window = entry[: m.start()], m.groups()
        name, _, source = head.partition(":")
        if name not in BENCHMARKS:
            by_hub_id = {b.hub_id: b.name for b in BENCHMARKS.values() if b.hub_id}
            if head not in by_hub_id:
                raise BenchmarkError(
                    f"sample.decontaminate: entry {entry!r} is not NAME, NAME:FILE_OR_HUB_ID or a benchmark's hub id "
                    f"(optionally @FROM..TO); benchmarks: {', '.join(BENCHMARKS)}"
                )
            name, source = by_hub_id[head], head
        return cls(name, source or None, *window)

    def __str__(self) -> str:
        window = f"@{self.release_from or ''}..{self.release_to or ''}" if self.release_from or self.release_to else ""
        return f"{self.benchmark}{':' + self.source if self.source else ''}{window}"


def decontaminate_prompts(prompts: list[Prompt], entries: list[str]) -> tuple[list[Prompt], list[dict], list[dict]]:
    """Remove prompts that are evaluation problems: the same problem id (ids that are not plain numbers,
    which are row numbers in one dataset and problem numbers in another), or at least MIN_OVERLAP of the
    statement's word 13-grams (lowercased alphanumeric words) inside one benchmark problem's text.
    `entries` name the benchmark data (DecontaminationTarget); returns the kept prompts, the removed
    ones, and per entry what was checked (source, window, problems) with the overlap found there, or
    `not_checked`: why its data could not be loaded (an entry without a file or hub id of its own).

    A share rather than any single shared 13-gram, and the statement without its starter code, because
    coding problems share boilerplate: LeetCode's TreeNode stub, "a subsequence is an array that can be
    derived from another array by deleting...". Measured on leetcode-train against all four benchmarks:
    68 prompts share >= 50% (each a LiveCodeBench problem, verbatim), 4 share 20-50% (one the same
    problem, two sister problems, one tree boilerplate), 11 share 10-20% (boilerplate); 315 share any."""
    ids: dict[str, tuple[str, str, str]] = {}
    index: dict[int, set[tuple[str, str, str]]] = {}
    checked = []
    for entry in entries:
        target = DecontaminationTarget.parse(entry)
        try:
            texts = benchmark_texts(target.benchmark, target.source, target.release_from, target.release_to)
        except DataUnavailable as e:
            if target.source:  # data the entry names must load; only a benchmark's own data may be missing here
                raise
            checked.append({"entry": entry, "benchmark": target.benchmark, "not_checked": str(e), "problems": 0})
            continue
        checked.append(
            {
                "entry": entry,
                "benchmark": target.benchmark,
                "source": get(target.benchmark).source(target.source),
                "release_from": target.release_from,
                "release_to": target.release_to,
                "problems": len(texts),
            }
        )
        for pid, text in texts:
            owner = (entry, target.benchmark, pid)
            if not pid.isdigit():
                ids.setdefault(pid.lower(), owner)
            for g in _ngrams(text):
                index.setdefault(g, set()).add(owner)
    kept, removed = [], []
    for p in prompts:
        hit = ids.get(p.id.lower())
        if hit:
            removed.append(
                {"id": p.id, "entry": hit[0], "benchmark": hit[1], "problem_id": hit[2], "reason": "same id"}
            )
            continue
        grams = _ngrams(p.text)
        shared = Counter(owner for g in grams for owner in index.get(g, ()))
        if shared:
            ((owner, count),) = shared.most_common(1)
            if count / len(grams) >= MIN_OVERLAP:
                removed.append(
                    {
                        "id": p.id,
                        "entry": owner[0],
                        "benchmark": owner[1],
                        "problem_id": owner[2],
                        "reason": f"{count}/{len(grams)} {NGRAM}-grams shared",
                    }
                )
                continue
        kept.append(p)
    for c in checked:
        if c.get("not_checked"):
            continue
        c["overlap"] = [{k: r[k] for k in ("id", "problem_id", "reason")} for r in removed if r["entry"] == c["entry"]]
    return kept, removed, checked
