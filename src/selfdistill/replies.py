"""`ssd eval --benchmark B --replies FILE`: grade replies made elsewhere (an API, another harness,
an older run) with the same sandbox, grading profile, summary.json and layout as a model eval. No model
is loaded. `ssd export-replies EVAL_DIR --format evalplus|lcb` writes an eval's replies for those harnesses.

FILE is in one of three formats, detected from its content (or named: eval.replies_format):
- evalplus: EvalPlus's samples.jsonl, one {"task_id", "solution"} or {"task_id", "completion"} per line;
  a solution is the whole program, a completion continues the problem's prompt (as EvalPlus grades it).
- lcb: LiveCodeBench's custom-evaluator JSON, [{"question_id", "code_list": [code, ...]}, ...]
  (LiveCodeBench#138); the codes of a question are its samples, in list order.
  Both hold code, not replies: each code is graded as a reply holding it in one fenced block, so the
  profile's extraction gives it back unchanged. Neither has temperatures (results/Tnone.jsonl).
- selfdistill: our own JSONL, one object per line:
    problem_id   str, required: a problem of the benchmark ("HumanEval/0", LiveCodeBench's question_id)
    reply        str, required: the whole reply, as a model gives it; the profile extracts the code
    temperature  number >= 0, optional: on every line or on none. A problem's replies at one temperature
                 are its samples, in file order; pass@k needs k of them (a single reply at temperature 0
                 is greedy and stands for all k, as in a model eval)
Other fields are ignored. Problems without replies are left out of the eval (summary.json lists the
problems graded); replies for problems that the selection (release window, platforms, limit) leaves
out are counted and not graded. Every problem graded needs replies at every temperature in the file.

Output (cfg.output_dir), as a model eval's (evaluate.py): results/T<temperature>.jsonl (Tnone.jsonl
without temperatures), one record per reply with seed, reply_tokens, finish_reason and prompt_text null
and replies_line its line in FILE; summary.json with model "replies <FILE name>" and the file's sha256;
manifest.json with the sha256 among its inputs. A rerun keeps the records graded and grades the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import benchmarks, rows
from .benchmarks import BenchmarkError, ExtractionError, Problem
from .config import EvalConfig
from .manifest import RunDir, atomic_write_json, atomic_write_jsonl, load_manifest, read_jsonl, sha256_file
from .results import (
    BLOCK,
    EvalSummary,
    RepliesFile,
    console,
    graded_otherwise,
    load_results,
    print_sweep,
    results_path,
    summarize,
    t_label,
    without_verdict,
    write_summary,
)
from .sandbox import Pool


@dataclass
class Reply:
    line: int  # in the replies file (lcb: the question's place in the list, from 1), for records
    problem_id: str
    temperature: float | None
    text: str
    where: str = ""  # names it in messages: "file:line", or "file[i].code_list[j]"
    id_field: str = "problem_id"  # the file's name for the problem: task_id (EvalPlus), question_id (LiveCodeBench)


def read_replies(path: Path, fmt: str | None = None) -> list[Reply]:
    """Every reply of the file, in format `fmt` (None: detected), checked; an error names the file,
    the line and the field."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such replies file")
    fmt = fmt or detect_format(path)
    if fmt == "lcb":
        replies = [
            r
            for i, (where, row) in enumerate(rows.read(path, "", raises=BenchmarkError), 1)
            for r in _lcb_replies(where, i, row)
        ]
    else:
        parse = _evalplus_reply if fmt == "evalplus" else _reply
        replies = [parse(f"{path}:{n}", n, row) for n, row in rows.jsonl(path, raises=BenchmarkError)]
    if not replies:
        raise BenchmarkError(f"{path}: no replies")
    _check_temperatures(path, replies)
    return replies


def detect_format(path: Path) -> str:
    """lcb for a JSON list of {question_id, code_list}; evalplus for JSONL rows with task_id; else ours."""
    first = next(rows.read(path, "", raises=BenchmarkError), (None, {}))[1]
    if path.name.removesuffix(".gz").endswith(".json"):
        if "question_id" not in first:
            raise BenchmarkError(
                f"{path}: a JSON replies file is LiveCodeBench's [{{question_id, code_list}}, ...]; "
                "its first object has no 'question_id'"
            )
        return "lcb"
    return "evalplus" if "task_id" in first else "selfdistill"


def _string_fields(where: str, row: dict, fields: tuple[str, ...]) -> None:
    for field in fields:
        if field not in row:
            raise BenchmarkError(f"{where}: missing field {field!r}")
        if not isinstance(row[field], str):
            raise BenchmarkError(f"{where}: field {field!r} must be a string, got {type(row[field]).__name__}")


def _reply(where: str, n: int, row: dict) -> Reply:
    _string_fields(where, row, ("problem_id", "reply"))
    T = row.get("temperature")
    if T is not None and (isinstance(T, bool) or not isinstance(T, (int, float)) or T < 0):
        raise BenchmarkError(f"{where}: field 'temperature' must be a number >= 0, got {T!r}")
    return Reply(n, row["problem_id"], None if T is None else float(T), row["reply"], where)


def as_reply(code: str) -> str:
    """Code as a reply that holds it in one fenced block: both profiles' extraction gives the code back."""
    return f"```python\n{code}\n```\n"


def _evalplus_reply(where: str, n: int, row: dict) -> Reply:
    code_field = (
        "solution" if "solution" in row else "completion"
    )  # a completion continues the prompt (Benchmark.program)
    _string_fields(where, row, ("task_id", code_field))
    return Reply(n, row["task_id"], None, as_reply(row[code_field]), where, "task_id")


def _lcb_replies(where: str, i: int, row: dict) -> list[Reply]:
    _string_fields(where, row, ("question_id",))
    codes = row.get("code_list")
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise BenchmarkError(f"{where}: field 'code_list' must be a list of strings")
    return [
        Reply(i, row["question_id"], None, as_reply(code), f"{where}.code_list[{j}]", "question_id")
        for j, code in enumerate(codes)
    ]


def _check_temperatures(path: Path, replies: list[Reply]) -> None:
    """Temperatures on every line or on none, and distinct at two decimals (results are named T<0.00>.jsonl)."""
    given = [r for r in replies if r.temperature is not None]
    if given and len(given) < len(replies):
        missing = next(r for r in replies if r.temperature is None)
        raise BenchmarkError(
            f"{missing.where}: missing field 'temperature' (line {given[0].line} has one: "
            "give it on every line or on none)"
        )
    first = {}
    for r in given:
        other = first.setdefault(t_label(r.temperature), r)
        if other.temperature != r.temperature:
            raise BenchmarkError(
                f"{r.where}: field 'temperature' {r.temperature!r} and {other.temperature!r} (line {other.line}) "
                "are the same at two decimals"
            )


def replied_problems(
    path: Path, replies: list[Reply], problems: list[Problem], bench, benchmark_path: str | None
) -> list[Problem]:
    """The selected problems that have replies, in benchmark order. A problem_id the benchmark does not
    have at all is an error; one the selection left out is counted and skipped."""
    selected = {p.id for p in problems}
    outside = [r for r in replies if r.problem_id not in selected]
    if outside:
        known = {p.id for p in bench.problems(benchmark_path)}  # parsed again only when some replies fall outside
        unknown = next((r for r in outside if r.problem_id not in known), None)
        if unknown:
            raise BenchmarkError(
                f"{unknown.where}: field {unknown.id_field!r}: "
                f"unknown problem {unknown.problem_id!r} (not in {bench.name})"
            )
        console.print(
            f"{len(outside)} replies are for problems outside the selection (release window, "
            "platforms, limit): not graded"
        )
    replied = {r.problem_id for r in replies}
    kept = [p for p in problems if p.id in replied]
    if not kept:
        raise BenchmarkError(f"{path}: no reply is for a selected problem of {bench.name}")
    return kept


def samples_by_temperature(path: Path, replies: list[Reply], problems: list[Problem], ks: list[int]) -> dict:
    """{temperature: [(problem, sample index, reply), ...]} in problem order, every problem at every
    temperature with enough samples for pass@max(ks)."""
    by_id = {p.id: p for p in problems}
    groups: dict = {}
    for r in replies:
        if r.problem_id in by_id:
            groups.setdefault(r.temperature, {}).setdefault(r.problem_id, []).append(r)
    need = max(ks)
    for T, per_problem in groups.items():
        for p in problems:
            got = per_problem.get(p.id, [])
            if not got:
                raise BenchmarkError(
                    f"{path}: problem_id {p.id!r} has no reply at temperature {t_label(T)}, others have: "
                    "give every problem replies at every temperature"
                )
            if len(got) < need and not (T == 0 and len(got) == 1):
                raise BenchmarkError(
                    f"{got[0].where}: problem_id {p.id!r} has {len(got)} replies at temperature {t_label(T)}; "
                    f"pass@{need} needs {need} (ks={ks})"
                )
    return {T: [(p, j, r) for p in problems for j, r in enumerate(groups[T][p.id])] for T in sorted(groups)}


def _grade(out: Path, bench, T: float | None, samples: list, pool: Pool, advance, keep: bool) -> dict:
    """Grade one temperature's replies in blocks, writing the results file after each; records already on
    disk are kept (`keep`: graded under these rules) unless the sandbox gave no verdict on them (the manifest
    ties them to the same file)."""
    path = results_path(out, T)  # as a model eval's; without a temperature: Tnone.jsonl
    records = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(path)} if keep and path.is_file() else {}
    todo = [(p, j, r) for p, j, r in samples if (p.id, j) not in records or without_verdict(records[p.id, j])]
    advance(len(samples) - len(todo))
    for i in range(0, len(todo), BLOCK):
        block = todo[i : i + BLOCK]
        verdicts = bench.grade_many([p for p, _, _ in block], [r.text for _, _, r in block], pool)
        for (p, j, r), v in zip(block, verdicts, strict=True):
            records[p.id, j] = {
                "problem_id": p.id,
                "temperature": T,
                "sample_index": j,
                "seed": None,
                "status": v.status,
                "passed": v.passed,
                "detail": v.detail,
                "reply": r.text,
                "reply_tokens": None,
                "finish_reason": None,
                "prompt_text": None,
                "replies_line": r.line,
            }
        atomic_write_jsonl(path, [records[p.id, j] for p, j, _ in samples if (p.id, j) in records])
        advance(len(block))
    return records


def grade_replies(cfg: EvalConfig, bench, problems: list[Problem], inputs: dict, extra: dict, pool: Pool) -> None:
    """The eval stage for cfg.replies: grade, summarize, print; `problems` is the benchmark's selection,
    `extra` what every eval manifest records (the benchmark's source, the sandbox nodes)."""
    path = Path(cfg.replies)
    replies = read_replies(path, cfg.replies_format)
    problems = replied_problems(path, replies, problems, bench, cfg.benchmark_path)
    groups = samples_by_temperature(path, replies, problems, cfg.ks)
    inputs["replies"] = sha256_file(path)
    run = RunDir.open(cfg.output_dir, "eval", cfg, inputs, extra={**extra, "replies_file": str(path.resolve())})
    total = sum(len(samples) for samples in groups.values())
    keep = not graded_otherwise(run.manifest, bench)
    with Progress(
        TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("grading", total=total)
        results = {
            T: _grade(run.path, bench, T, samples, pool, lambda n: bar.update(task, advance=n), keep)
            for T, samples in groups.items()
        }
    run.update(grading_rules=bench.profile.rules())  # once every record follows them
    summary = summarize(cfg, bench, problems, results, RepliesFile(str(path), inputs["replies"], total))
    write_summary(run.path, summary)
    run.finish(n_problems=len(problems), n_replies=total)
    print_sweep(summary)


# ---------------------------------------------------------------------------- out: `ssd export-replies`


def exported_temperature(summary: EvalSummary, temperature: float | None) -> float | None:
    """The temperature whose replies leave: the one asked for, the eval's only one, or its pass@1 choice on dev."""
    temps = {e.temperature for e in summary.entries}
    if temperature is None and len(temps) == 1:
        return next(iter(temps))  # None for replies graded without a temperature
    if temperature is None:
        chosen = summary.chosen(1)
        if chosen is None:
            raise BenchmarkError(
                f"the eval holds temperatures {sorted(temps)} and chose none on dev: give --temperature"
            )
        temperature = chosen.best_T
    if temperature not in temps:
        raise BenchmarkError(
            f"temperature {temperature} was not evaluated (temperatures: {sorted(t for t in temps if t is not None)})"
        )
    return temperature


def export_replies(
    eval_dir: str | Path, fmt: str, out: str | Path | None = None, temperature: float | None = None
) -> Path:
    """An eval's replies at one temperature as EvalPlus samples.jsonl ({task_id, solution}) or LiveCodeBench
    custom-evaluator JSON ([{question_id, code_list}]): the code the grading profile extracted from each
    reply, or "" where it found none (so the other harness fails it too). Default `out`:
    EVAL_DIR/export/<fmt>-T<temperature>.json(l)."""
    if fmt not in ("evalplus", "lcb"):
        raise BenchmarkError(f"unknown replies format {fmt!r}: evalplus or lcb")
    eval_dir = Path(eval_dir)
    summary, results = load_results(eval_dir)
    T = exported_temperature(summary, temperature)
    config = load_manifest(eval_dir)["config"]
    bench = benchmarks.get(config["benchmark"]).graded_by(
        config["grading"], config.get("sanitize")
    )  # the eval's extraction rule
    problems = {p.id: p for p in bench.problems(config["benchmark_path"])}

    def code(record: dict) -> str:
        try:
            return bench.extract(problems[record["problem_id"]], record["reply"])
        except ExtractionError:
            return ""

    records = results[T]
    out = Path(out) if out else eval_dir / "export" / f"{fmt}-T{t_label(T)}.{'jsonl' if fmt == 'evalplus' else 'json'}"
    if fmt == "evalplus":
        atomic_write_jsonl(out, [{"task_id": r["problem_id"], "solution": code(r)} for r in records])
    else:
        codes: dict[str, list[str]] = {}
        for r in records:
            codes.setdefault(r["problem_id"], []).append(code(r))
        atomic_write_json(out, [{"question_id": pid, "code_list": c} for pid, c in codes.items()])
    console.print(f"wrote {len(records)} replies of {eval_dir} at T={t_label(T)} to {out} ({fmt})")
    return out
