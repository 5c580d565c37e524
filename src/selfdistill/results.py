"""The eval stage's output, read and scored: where results and summary.json live, the summary's declared
schema, pass@k per problem, the summary of a results matrix, and the paired comparison of two evals.
evaluate.py (a model's replies, or the references) and replies.py (replies made elsewhere) write this
layout; every other stage reads it through here.

    EVAL_DIR/results/T<0.00>.jsonl   one record per (problem, sample), written BLOCK records at a time
    EVAL_DIR/summary.json            EvalSummary (summarize()): pass@k with CIs on all/dev/test, by group,
                                     the T chosen on dev
    primary_endpoints(specs, evals)  pre-registered paired comparisons with Holm-adjusted p (`ssd report`)
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from . import benchmarks, metrics
from .benchmarks import BenchmarkError, Problem
from .config import EvalConfig
from .grading import legacy_rules
from .manifest import atomic_write_json, finished, load_manifest, read_jsonl
from .sandbox import NOT_RUN_DETAIL

console = Console(stderr=True, highlight=False)
BLOCK = 64  # requests graded and written together: the unit of atomic writes and of resume
NO_VERDICT = ("sandbox_error", "not_run")  # record statuses that say nothing about the reply: graded again


def t_label(T: float | None) -> str:
    return "none" if T is None else f"{T:.2f}"  # None: replies graded without a temperature


def samples_per_problem(cfg: EvalConfig, T: float, test: bool = False) -> int:
    return 1 if T == 0 else cfg.test_n if test else cfg.n


def results_path(eval_dir: str | Path, T: float | None) -> Path:
    """The results file of temperature T (None: replies graded without a temperature)."""
    return Path(eval_dir) / "results" / f"T{t_label(T)}.jsonl"


def summary_path(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / "summary.json"


# ---------------------------------------------------------------------------- summary.json, declared
# Every reader goes through these types; EvalSummary.from_json also reads the summaries older versions
# wrote (_upgrade), so committed experiments keep their reports.


class Protocol(StrEnum):
    """How an eval decoded its temperatures (EvalConfig.test_n, EvalConfig.replies)."""

    GRID = "grid"  # every temperature on every problem, n samples each
    TWO_PHASE = "two_phase"  # every temperature on dev (n samples), the dev-chosen one on test (test_n samples)
    REPLIES = "replies"  # replies made elsewhere (`--replies FILE`): every problem at every temperature of the file

    @classmethod
    def read(cls, value: str | None) -> Protocol | str:
        """The protocol of a summary.json, including the sentences older versions wrote ("grid: every
        temperature ...", "two-phase: ...", "replies made elsewhere: FILE") and none at all (grid). An
        unknown value is left as it is, for the schema's error to name the field."""
        if value is None:
            return cls.GRID
        legacy = {"grid": cls.GRID, "two-phase": cls.TWO_PHASE, "replies": cls.REPLIES}
        return next((protocol for start, protocol in legacy.items() if value.startswith(start)), value)


@dataclass
class Score:
    """pass@k averaged over a set of problems."""

    mean: float  # the mean of the problems' unbiased pass@k
    ci_lo: float  # 95% bootstrap CI over problems (metrics.bootstrap_ci, seeded by the eval's seed)
    ci_hi: float
    n_problems: int  # problems averaged


@dataclass
class PassAtK:
    """One pass@k at one temperature, on each split and group; a score is None where some of its problems
    were not decoded at this temperature (the two-phase protocol's test split)."""

    all: Score | None  # every problem of the eval
    dev: Score | None  # the dev split, where temperatures are chosen
    test: Score | None  # the held-out test split, where the chosen one is scored
    by_difficulty: dict[str, Score | None]  # per difficulty label (LiveCodeBench, LeetCode); {} without labels
    by_platform: dict[str, Score | None]  # per platform (LiveCodeBench); {} without


@dataclass
class ReplyTokens:
    """Reply lengths in tokens at one temperature."""

    mean: float
    median: int
    max: int


@dataclass
class TemperatureEntry:
    """Everything summary.json says about one temperature (JSON: pass@k are keys "pass@1", "pass@2", ...)."""

    temperature: float | None  # None: replies graded without a temperature (results/Tnone.jsonl)
    n: int  # samples per problem: 1 greedy; two-phase: on dev; replies: the most a problem has in the file
    greedy: bool  # temperature 0: one sample stands for every k
    # two-phase only: samples per test problem (0: not decoded on test, not chosen on dev); absent otherwise
    test_n: Annotated[int | None, Field(exclude_if=lambda v: v is None)]
    ks: list[int]  # the k of pass_at: every k the samples allow, and the eval's ks
    pass_at: dict[int, PassAtK]  # k -> pass@k on every split
    status_counts: dict[str, int]  # replies per record status (sandbox.STATUSES, extraction_failed)
    extraction_failed: float  # share of replies with no code to run
    truncated: float  # share of replies cut by max_tokens (finish_reason "length")
    reply_tokens: ReplyTokens | None  # None: replies made elsewhere (no token counts)


@dataclass
class Selection:
    """The fair best-temperature baseline for one pass@k (metrics.select_temperature)."""

    best_T: float | None  # the temperature best on dev (ties -> the lower); None: replies without temperatures
    dev_score: float  # its pass@k on dev
    test_score: float  # its pass@k on test, with a 95% bootstrap CI:
    test_ci_lo: float
    test_ci_hi: float
    dev_by_T: dict[str, float]  # pass@k on dev at every temperature, keyed as JSON writes it ("0.7", "null")
    test_by_T: dict[str, float]  # pass@k on test at every temperature decoded there
    oracle_T: float | None  # the temperature best on test: optimistic, for reference; None if test has one only
    oracle_test_score: float | None
    n_dev: int  # problems of each split
    n_test: int


@dataclass
class Skipped:
    """No temperature chosen, and why."""

    skipped: str


@dataclass
class Decoding:
    """The truncation and length the model decoded with (the temperatures are the entries')."""

    top_k: int
    top_p: float
    min_p: float
    max_tokens: int


@dataclass
class RepliesFile:
    """The file a replies eval graded (`ssd eval --replies FILE`)."""

    path: str  # as given
    sha256: str
    count: int  # replies graded


@dataclass
class EvalSummary:
    """summary.json of an eval stage (not of an oracle run, whose summary is its own)."""

    benchmark: str  # the benchmark's registry name
    label: str  # which tests graded: "all tests", or "public tests" (the shared LiveCodeBench copy)
    grading: str  # the grading profile
    grading_rules: dict | None  # grading.Profile.rules() the verdicts follow; None: written before rules were recorded
    model: str  # the model evaluated, or "replies <FILE name>"
    prompt_format: str
    decoding: Decoding | None  # None: replies made elsewhere
    n_problems: int
    ks: list[int]  # the eval's ks: the pass@k chosen on dev (selection)
    t_eval: float | None  # the eval config's single T_eval, if it named one
    dev_fraction: float
    seed: int  # of the dev/test split and the bootstraps
    protocol: Protocol
    problem_ids: list[str]  # every problem graded, in benchmark order
    dev_ids: list[str]
    test_ids: list[str]
    temperatures: dict[str, TemperatureEntry]  # by t_label: "0.70", or "none"
    # k -> the choice for pass@k (JSON: "pass@K" keys); Skipped: the dev/test split left nothing to choose on
    selection: dict[int, Selection | Skipped] | Skipped
    replies: Annotated[RepliesFile | None, Field(exclude_if=lambda v: v is None)] = None  # replies evals only
    # problem ids by difficulty label, for paired comparisons per difficulty; {}: no labels, or written before
    by_difficulty: Annotated[dict[str, list[str]], Field(exclude_if=lambda v: not v)] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict, where: str = "summary.json") -> EvalSummary:
        """A summary from its JSON (any version's); bad input raises BenchmarkError naming `where` and the field."""
        if data.get("oracle"):
            raise BenchmarkError(f"{where}: an oracle run's summary: there is no model to read")
        try:
            return _SCHEMA.validate_python(_upgrade(data))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(part) for part in err["loc"])
            raise BenchmarkError(f"{where}: field {loc!r}: {err['msg']}") from None

    def to_json(self) -> dict:
        """The JSON layout: pass@k as "pass@K" keys of each temperature's entry and of selection."""
        data = _SCHEMA.dump_python(self, mode="json")
        for entry in data["temperatures"].values():
            at = list(entry).index("pass_at")
            items = list(entry.items())
            entry.clear()
            entry.update(items[:at] + [(f"pass@{k}", v) for k, v in items[at][1].items()] + items[at + 1 :])
        if "skipped" not in data["selection"]:
            data["selection"] = {f"pass@{k}": v for k, v in data["selection"].items()}
        return data

    @property
    def entries(self) -> list[TemperatureEntry]:
        return list(self.temperatures.values())

    def entry(self, T: float | None) -> TemperatureEntry:
        """The entry of temperature T."""
        return next(e for e in self.temperatures.values() if e.temperature == T)

    def chosen(self, k: int) -> Selection | None:
        """The temperature chosen on dev for pass@k, or None where none was."""
        choice = None if isinstance(self.selection, Skipped) else self.selection.get(k)
        return choice if isinstance(choice, Selection) else None

    @property
    def skipped(self) -> str | None:
        """Why no temperature was chosen for any k (too few problems to split), or None."""
        return self.selection.skipped if isinstance(self.selection, Skipped) else None

    def swept_split(self, whole: str) -> str:
        """The split a reader shows every temperature on: `whole` ("all" or "test") where every temperature
        was decoded on every problem (grid, replies); dev in the two-phase protocol, where test is decoded
        at the dev-chosen temperature only. The one rule grid.json and the reports follow."""
        return "dev" if self.protocol is Protocol.TWO_PHASE else whole


_SCHEMA = TypeAdapter(EvalSummary)
_SCORE = TypeAdapter(Score | None)  # a score as summary.json writes it, for compare.json's base_settings


def _pass_at_keys(data: dict) -> dict[int, object]:
    return {int(key.removeprefix("pass@")): value for key, value in data.items() if key.startswith("pass@")}


def _upgrade(data: dict) -> dict:
    """summary.json's layout as EvalSummary's fields, from any version: pass@k keys gathered, the protocol
    as a value, and the fields older summaries lack filled in as they meant."""
    out = {**data, "protocol": Protocol.read(data.get("protocol"))}
    out.setdefault("label", "all tests")  # older summaries name no label: they graded all tests
    out.setdefault("grading_rules", None)  # before rules were recorded (graded_otherwise)
    if isinstance(data.get("decoding"), dict):
        out["decoding"] = {"min_p": 0.0, **data["decoding"]}
    if isinstance(data.get("temperatures"), dict):  # otherwise the schema names what is wrong
        out["temperatures"] = {name: _upgrade_entry(entry) for name, entry in data["temperatures"].items()}
    selection = data.get("selection")
    if isinstance(selection, dict) and "skipped" not in selection:
        out["selection"] = _pass_at_keys(selection)
    return out


def _upgrade_entry(entry: dict) -> dict:
    pass_at = _pass_at_keys(entry)
    return {
        **{key: value for key, value in entry.items() if not key.startswith("pass@")},
        "pass_at": pass_at,
        "ks": entry.get("ks", sorted(pass_at)),  # older entries held the eval's ks only
        "test_n": entry.get("test_n"),  # the two-phase protocol's alone
    }


def load_summary(eval_dir: str | Path) -> EvalSummary:
    """The summary.json of a finished eval."""
    path = summary_path(eval_dir)
    if not path.is_file():
        raise BenchmarkError(f"{eval_dir} has no summary.json: the eval has not finished")
    return EvalSummary.from_json(json.loads(path.read_text()), str(path))


def write_summary(eval_dir: str | Path, summary: EvalSummary) -> None:
    atomic_write_json(summary_path(eval_dir), summary.to_json())


def without_verdict(record: dict) -> bool:
    """A reply the sandbox failed to grade or never ran: no verdict on the model; the eval grades it again."""
    return record["status"] in NO_VERDICT or record["detail"].endswith(NOT_RUN_DETAIL)  # older records: a timeout


def graded_benchmark(cfg: EvalConfig) -> benchmarks.Benchmark:
    """The benchmark under the config's grading profile and sanitizing switch."""
    return benchmarks.get(cfg.benchmark).graded_by(cfg.grading, cfg.sanitize)


def graded_otherwise(manifest: dict, bench: benchmarks.Benchmark) -> bool:
    """Whether an eval directory's verdicts were graded under other rules than `bench`'s (a directory
    from before rules were recorded: grading.legacy_rules). The eval regrades them all when it reopens,
    so a directory's verdicts always follow the rules its manifest and summary record."""
    return manifest.get("grading_rules", legacy_rules(bench.profile)) != bench.profile.rules()


def eval_done(cfg: EvalConfig) -> bool:
    """A finished eval stage of this config with a verdict on every reply, graded under the config's
    rules (otherwise the eval reopens and regrades: no model is loaded for that)."""
    return (
        finished(cfg.output_dir, cfg)
        and not graded_otherwise(load_manifest(cfg.output_dir), graded_benchmark(cfg))
        and not any(
            without_verdict(r)
            for path in results_path(cfg.output_dir, None).parent.glob("*.jsonl")
            for r in read_jsonl(path)
        )
    )


# ---------------------------------------------------------------------------- metrics


def per_problem_pass_at_k(records, problem_ids: list[str], k: int) -> dict[str, float]:
    """Unbiased pass@k per problem from its n samples; greedy (one sample) gives pass@k = pass@1.
    Problems of `problem_ids` without samples (in the two-phase protocol, the test split at a
    temperature not chosen on dev) are left out; callers check the coverage they need."""
    n, c = Counter(), Counter()
    for r in records:
        n[r["problem_id"]] += 1
        c[r["problem_id"]] += bool(r["passed"])
    return {
        pid: float(c[pid] > 0) if n[pid] == 1 else metrics.pass_at_k(n[pid], c[pid], k)
        for pid in problem_ids
        if n[pid]
    }


def _require(scores: dict[str, float], ids: list[str], where: str) -> None:
    missing = [pid for pid in ids if pid not in scores]
    if missing:
        raise BenchmarkError(
            f"{where}: no graded samples for {len(missing)} problems (e.g. {missing[0]}): the eval did not finish"
        )


def _score(scores: dict[str, float], ids: list[str], seed: int) -> Score | None:
    """Mean with a CI over `ids`; None when some of them were not decoded at this temperature."""
    if not ids or any(i not in scores for i in ids):
        return None
    mean, lo, hi = metrics.bootstrap_ci([scores[i] for i in ids], seed=seed)
    return Score(mean, lo, hi, len(ids))


def _groups(problems: list[Problem], key: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for p in problems:
        if p.metadata.get(key):
            groups.setdefault(str(p.metadata[key]), []).append(p.id)
    return dict(sorted(groups.items()))


def summarize(
    cfg: EvalConfig, bench, problems: list[Problem], results: dict[float, dict], replies: RepliesFile | None = None
) -> EvalSummary:
    """summary.json from the results matrix alone (records keyed by (problem id, sample index)); `replies`:
    the file a replies eval graded (no model: its samples per problem come from the file, not cfg.n)."""
    ids = [p.id for p in problems]
    dev, test = metrics.dev_test_split(ids, cfg.dev_fraction, cfg.seed)
    difficulty, platform = _groups(problems, "difficulty"), _groups(problems, "platform")
    per_T, scores = {}, {k: {} for k in cfg.ks}
    for T, by_key in results.items():
        records = list(by_key.values())
        per_problem = Counter(r["problem_id"] for r in records)
        # pass@k for every k the samples allow (up to the fewest samples of a decoded problem), and cfg.ks
        # (greedy: = pass@1)
        ks = sorted(set(cfg.ks) | set(range(1, min(per_problem.values(), default=1) + 1)))
        pass_at = {}
        for k in ks:
            s = per_problem_pass_at_k(records, ids, k)
            if k in scores:
                scores[k][T] = s
            _require(s, dev if cfg.test_n else ids, f"T={t_label(T)}")
            pass_at[k] = PassAtK(
                all=_score(s, ids, cfg.seed),
                dev=_score(s, dev, cfg.seed),
                test=_score(s, test, cfg.seed),
                by_difficulty={name: _score(s, members, cfg.seed) for name, members in difficulty.items()},
                by_platform={name: _score(s, members, cfg.seed) for name, members in platform.items()},
            )
        tokens = sorted(
            r["reply_tokens"] for r in records if r["reply_tokens"] is not None
        )  # None: replies made elsewhere
        per_T[t_label(T)] = TemperatureEntry(
            temperature=T,
            n=max(per_problem.values()) if replies else samples_per_problem(cfg, T),
            greedy=T == 0,
            test_n=(samples_per_problem(cfg, T, test=True) if any(per_problem[i] for i in test) else 0)
            if cfg.test_n
            else None,
            ks=ks,
            pass_at=pass_at,
            status_counts=dict(Counter(r["status"] for r in records)),
            extraction_failed=sum(r["status"] == "extraction_failed" for r in records) / len(records),
            truncated=sum(r["finish_reason"] == "length" for r in records) / len(records),
            reply_tokens=ReplyTokens(sum(tokens) / len(tokens), tokens[len(tokens) // 2], tokens[-1])
            if tokens
            else None,
        )
    if dev and test:
        selection = {k: _select(scores[k], dev, test, cfg.seed) for k in cfg.ks}
    else:
        selection = Skipped(
            f"dev/test split of {len(ids)} problems left dev={len(dev)}, test={len(test)}: nothing to choose on or "
            "report"
        )
    return EvalSummary(
        benchmark=bench.name,
        label=benchmarks.tests_label(problems),
        grading=bench.grading,
        grading_rules=bench.profile.rules(),
        model=f"replies {Path(replies.path).name}" if replies else cfg.model,
        prompt_format=cfg.prompt_format,
        decoding=None if replies else Decoding(cfg.top_k, cfg.top_p, cfg.min_p, cfg.max_tokens),
        n_problems=len(ids),
        ks=cfg.ks,
        t_eval=cfg.t_eval,
        dev_fraction=cfg.dev_fraction,
        seed=cfg.seed,
        protocol=Protocol.REPLIES if replies else Protocol.TWO_PHASE if cfg.test_n else Protocol.GRID,
        problem_ids=ids,
        dev_ids=dev,
        test_ids=test,
        temperatures=per_T,
        selection=selection,
        replies=replies,
        by_difficulty=difficulty,
    )


def _select(scores_by_T: dict, dev: list[str], test: list[str], seed: int) -> Selection | Skipped:
    """metrics.select_temperature, or why not: in the two-phase protocol a pass@k other than pass@1
    may prefer a temperature that was never decoded on test."""
    try:
        chosen = metrics.select_temperature(scores_by_T, dev, test, seed=seed)
    except ValueError as e:
        return Skipped(f"the temperature best on dev was not decoded on test ({e})")
    by_T = {key: {json.dumps(T): score for T, score in chosen[key].items()} for key in ("dev_by_T", "test_by_T")}
    return Selection(**{**chosen, **by_T})


def _fmt(score: Score | None) -> str:
    return "-" if score is None else f"{100 * score.mean:.1f} [{100 * score.ci_lo:.1f}, {100 * score.ci_hi:.1f}]"


def print_sweep(summary: EvalSummary) -> None:
    """The sweep as a table on stdout: pass@k with 95% CIs on all, dev and test problems."""
    ks = summary.ks
    label = "" if summary.label == "all tests" else f" ({summary.label})"
    table = Table(
        title=f"{summary.benchmark}{label}: {summary.model}, {summary.n_problems} problems "
        f"(dev {len(summary.dev_ids)} / test {len(summary.test_ids)}), pass@k in % [95% CI]"
    )
    for col in ["T", "n", *[f"pass@{k} all" for k in ks], "pass@1 dev", "pass@1 test", "no code", "truncated"]:
        table.add_column(col, justify="right")
    for name, e in summary.temperatures.items():
        table.add_row(
            name + (" (greedy)" if e.greedy else ""),
            str(e.n),
            *[_fmt(e.pass_at[k].all) for k in ks],
            _fmt(e.pass_at[1].dev) if 1 in ks else "-",
            _fmt(e.pass_at[1].test) if 1 in ks else "-",
            f"{100 * e.extraction_failed:.1f}%",
            f"{100 * e.truncated:.1f}%",
        )
    out = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets whole rows, not 80 columns
    out.print(table)
    k, entries = ks[0], summary.entries
    rows = [
        (f"{group} {name}", name, group)
        for group in ("difficulty", "platform")
        for name in getattr(entries[0].pass_at[k], f"by_{group}")
    ]
    if rows:
        breakdown = Table(title=f"pass@{k} in % by difficulty and platform (all problems)")
        for col in ["group", "problems", *[f"T={T}" for T in summary.temperatures]]:
            breakdown.add_column(col, justify="right")
        for title, name, group in rows:
            cells = [getattr(e.pass_at[k], f"by_{group}")[name] for e in entries]
            breakdown.add_row(title, str(cells[0].n_problems), *map(_fmt, cells))
        out.print(breakdown)
    if summary.skipped:
        console.print(f"best temperature: {summary.skipped}")
        return
    for k, s in summary.selection.items():
        if isinstance(s, Skipped):
            console.print(f"best temperature: {s.skipped}")
            continue
        optimistic = (
            ""
            if s.oracle_T is None
            else f"  (chosen on test instead: T={s.oracle_T:g}, {100 * s.oracle_test_score:.1f}, optimistic)"
        )
        console.print(
            f"best T for pass@{k} on dev: {t_label(s.best_T)} (dev {100 * s.dev_score:.1f}) -> test "
            f"{100 * s.test_score:.1f} [{100 * s.test_ci_lo:.1f}, {100 * s.test_ci_hi:.1f}]{optimistic}"
        )


# ---------------------------------------------------------------------------- comparing two models


def load_results(eval_dir: str | Path) -> tuple[EvalSummary, dict[float | None, list[dict]]]:
    """An eval directory's summary and its results matrix by temperature."""
    eval_dir = Path(eval_dir)
    load_manifest(eval_dir)  # a clear error when this is not a stage directory
    summary = load_summary(eval_dir)
    return summary, {e.temperature: read_jsonl(results_path(eval_dir, e.temperature)) for e in summary.entries}


def records_at(results: dict[float | None, list[dict]], T: float) -> list[dict] | None:
    """load_results' records decoded at temperature T (float keys compared to within 1e-9), or None."""
    return next((r for t, r in results.items() if t is not None and abs(t - T) < 1e-9), None)


def base_settings(sweep_dir: str | Path, recommended_dir: str | Path | None = None, k: int = 1) -> dict:
    """The base model's pass@k three ways, from the eval summaries: at its recommended decoding (paper
    Table 4, the eval in `recommended_dir`), at the T_eval chosen on dev (the fair baseline), and at the
    T_eval best on all problems (optimistic: chosen on the problems it is scored on). Each gives its
    test and all-problem scores; a setting the evals cannot give is left out."""
    sweep = load_summary(sweep_dir)

    def setting(summary: EvalSummary, entry: TemperatureEntry) -> dict:
        return {
            "T": entry.temperature,
            "top_k": summary.decoding.top_k,
            "top_p": summary.decoding.top_p,
            "test": _SCORE.dump_python(entry.pass_at[k].test),
            "all": _SCORE.dump_python(entry.pass_at[k].all),
        }

    out = {"metric": f"pass@{k}"}
    if recommended_dir:
        recommended = load_summary(recommended_dir)
        out["recommended"] = setting(recommended, recommended.entries[0])
    chosen = sweep.chosen(k)
    if chosen:
        out["dev_chosen"] = setting(sweep, sweep.entry(chosen.best_T))
    if all(e.pass_at[k].all for e in sweep.entries):  # the two-phase protocol decodes few temperatures on all problems
        best = max(sweep.entries, key=lambda e: (e.pass_at[k].all.mean, -e.temperature))  # ties -> the lower T
        out["optimistic"] = setting(sweep, best)
    return out


def compare(eval_dir_a: str | Path, eval_dir_b: str | Path, k: int = 1, seed: int = 0) -> dict:
    """b versus a on the same problems: each at its own temperature chosen on dev, compared on test
    (the fair comparison), and at every temperature both swept, on all problems. Differences are b - a,
    with a paired bootstrap CI and paired tests (metrics.paired_comparison)."""
    sa, ra = load_results(eval_dir_a)
    sb, rb = load_results(eval_dir_b)
    for key in ("benchmark", "problem_ids", "dev_ids", "test_ids"):
        if getattr(sa, key) != getattr(sb, key):
            raise BenchmarkError(
                f"{eval_dir_a} and {eval_dir_b} differ in {key}: a paired comparison needs the same problems and split"
            )
    if sa.grading_rules != sb.grading_rules:
        raise BenchmarkError(
            f"{eval_dir_a} and {eval_dir_b} were graded under different rules (grading_rules in their summaries): "
            "rerun the older eval to regrade it (no model is loaded)"
        )
    ids, test = sa.problem_ids, sa.test_ids
    a = {T: per_problem_pass_at_k(r, ids, k) for T, r in ra.items()}
    b = {T: per_problem_pass_at_k(r, ids, k) for T, r in rb.items()}
    # Per temperature, the problems both decoded: all of them in the grid protocol, dev in the two-phase one.
    shared = {T: [i for i in ids if i in a[T] and i in b[T]] for T in set(a) & set(b)}
    out = {
        "a": str(eval_dir_a),
        "b": str(eval_dir_b),
        "benchmark": sa.benchmark,
        "label": sa.label,
        "metric": f"pass@{k}",
        "model_a": sa.model,
        "model_b": sb.model,
        "n_problems": len(ids),
    }
    sel_a, sel_b = sa.chosen(k), sb.chosen(k)
    if sel_a and sel_b:
        Ta, Tb = sel_a.best_T, sel_b.best_T
        out["best_T"] = {"a": Ta, "b": Tb}
        out["test"] = metrics.paired_comparison([a[Ta][i] for i in test], [b[Tb][i] for i in test], seed=seed)
    out["by_temperature"] = {
        t_label(T): {
            **metrics.paired_comparison([a[T][i] for i in shared[T]], [b[T][i] for i in shared[T]], seed=seed),
            "problems": "all"
            if len(shared[T]) == len(ids)
            else "dev"
            if len(shared[T]) == len(sa.dev_ids)
            else len(shared[T]),
        }
        for T in sorted(shared)
        if shared[T]
    }
    return out


# ---------------------------------------------------------------------------- pre-registered endpoints

_ENDPOINT = re.compile(
    r"^\s*(?P<name>[^:]+?)\s*:\s*pass@(?P<k>\d+)\s+(?P<b>\S+)@(?P<tb>[\d.]+)\s+vs\s+(?P<a>\S+)@(?P<ta>[\d.]+)\s*$"
)
ENDPOINT_FORMAT = "'NAME: pass@K MODEL@T vs MODEL@T' (e.g. 'P1: pass@1 ssd@0.7 vs base@0.7')"


def primary_endpoints(declared: list[tuple[str, str, dict[str, Path | None]]], seed: int = 0) -> list[dict]:
    """Each pre-registered endpoint (config report.primary) as a paired comparison, first model minus
    second, on every problem both evals decoded at those temperatures (no temperature is chosen, so no
    problem is held out), with Holm's adjustment over the whole family. `declared`: (where it is declared,
    as "FILE: report.primary[i]", the spec, its models' eval dirs by name, None where none is recorded
    yet). An endpoint whose evals have not finished has no comparison and counts as p = 1 in the
    adjustment (conservative). A spec that does not parse raises BenchmarkError naming where it is declared."""
    out, cache = [], {}
    for where, spec, evals in declared:
        m = _ENDPOINT.match(spec)
        if not m or int(m["k"]) < 1:
            raise BenchmarkError(f"{where}: {spec!r}: expected {ENDPOINT_FORMAT}")
        for model in (m["a"], m["b"]):
            if model not in evals:
                raise BenchmarkError(f"{where}: {spec!r}: unknown model {model!r}; models here: {', '.join(evals)}")
        k, sides = int(m["k"]), [(m["b"], float(m["tb"])), (m["a"], float(m["ta"]))]
        endpoint = {
            "name": m["name"],
            "spec": spec.strip(),
            "metric": f"pass@{k}",
            "b": sides[0],
            "a": sides[1],
            "comparison": None,
        }
        scores = []
        for model, T in sides:
            if evals[model] not in cache:
                cache[evals[model]] = load_results(evals[model]) if evals[model] and finished(evals[model]) else None
            loaded = cache[evals[model]]
            records = loaded and records_at(loaded[1], T)
            if records is not None and k > 1 and min(Counter(r["problem_id"] for r in records).values()) < k:
                raise BenchmarkError(f"{where}: {spec!r}: {model} has fewer than {k} samples per problem at T={T:g}")
            scores.append(per_problem_pass_at_k(records, loaded[0].problem_ids, k) if records is not None else None)
        if all(s is not None for s in scores):
            shared = [pid for pid in scores[0] if pid in scores[1]]
            endpoint["comparison"] = metrics.paired_comparison(
                [scores[1][p] for p in shared], [scores[0][p] for p in shared], seed=seed
            )
        out.append(endpoint)
    for endpoint, adjusted in zip(
        out, metrics.holm([e["comparison"]["p_value"] if e["comparison"] else 1.0 for e in out]), strict=True
    ):
        endpoint["holm_p"] = adjusted
    return out
