"""Prompt loading: named datasets, local files with bad rows, dedup, decontamination, chat formats."""

import gzip
import json

import pytest

from selfdistill.benchmarks import data_dir, get
from selfdistill.prompts import (
    DATASETS,
    Prompt,
    PromptError,
    collect_prompts,
    decontaminate_prompts,
    load_prompts,
)


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_named_datasets_load_from_the_shared_copy():
    leetcode = load_prompts("leetcode-train")
    assert len(leetcode) == 1890 and leetcode[0].id == "two-sum"
    assert "Example 1" in leetcode[0].text  # the full statement, not the shortened query
    assert leetcode[0].starter_code.startswith("class Solution:")
    splits = {name: load_prompts(name) for name in ("mbpp-train", "mbpp-validation", "mbpp-prompt")}
    assert {k: len(v) for k, v in splits.items()} == {"mbpp-train": 374, "mbpp-validation": 90, "mbpp-prompt": 10}
    first = splits["mbpp-prompt"][0]
    assert (
        first.id == "Mbpp/1" and first.starter_code == "def min_cost(cost, m, n):" and "assert min_cost(" in first.text
    )


def test_malformed_rows_are_reported_and_skipped(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "question": "Sum two numbers."},
            "{not json",
            {"id": "b"},
            {"id": "c", "question": "   "},
            [1, 2],
            {"id": "d", "question": "Reverse a string.", "starter_code": 5},
            {"id": "e", "question": "Sort a list."},
        ],
    )
    found = collect_prompts(str(path))
    assert [p.id for p in found.prompts] == ["a", "e"]
    assert [e["where"] for e in found.errors] == [f"{path}:{i}" for i in (2, 3, 4, 5, 6)]
    reasons = " | ".join(e["reason"] for e in found.errors)
    assert (
        "invalid JSON" in reasons and "missing field" in reasons and "empty" in reasons and "starter_code" in reasons
    )
    with pytest.warns(UserWarning, match=r"p\.jsonl:2: invalid JSON"):
        assert len(load_prompts(str(path), limit=1)) == 1


def test_field_formats_and_ids(tmp_path):
    rows = [
        {"task_id": "x1", "meta": {"statement": "Count vowels."}},
        {"task_id": "x2", "meta": {"statement": "Count words."}},
    ]
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    for name in ("p.jsonl.gz", "p.json"):
        prompts = load_prompts(str(tmp_path / name), field="meta.statement")
        assert [(p.id, p.text) for p in prompts] == [("x1", "Count vowels."), ("x2", "Count words.")]
    with pytest.raises(PromptError, match="no usable prompts.*missing field meta.nope"):
        load_prompts(str(tmp_path / "p.json"), field="meta.nope")
    with pytest.raises(PromptError, match="did you mean 'leetcode-train'"):
        load_prompts("leetcode-trian")


def test_exact_dedup_and_id_conflicts(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "question": "Sum  two\nnumbers."},
            {"id": "b", "question": "Sum two numbers. "},  # the same after whitespace normalization
            {"id": "a", "question": "Something else."},  # id taken by another statement
            {"id": "c", "question": "Sum two numbers.", "starter_code": "def f(a, b):"},  # starter code differs: kept
        ],
    )
    found = collect_prompts(str(path))
    assert [p.id for p in found.prompts] == ["a", "c"]
    assert found.duplicates == [{"id": "b", "duplicate_of": "a", "where": f"{path}:2"}]
    assert found.errors[0]["where"] == f"{path}:3" and "already names another statement" in found.errors[0]["reason"]


def test_rstar_coder_code_path_with_a_local_copy(tmp_path, monkeypatch):
    """rStar-Coder seed_sft (the paper's prompts) is online-only; its local mirror goes through the same
    parser: several responses per question, deduplicated on the statement."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "question_id": ["q1", "q1", "q2", "q3"],
        "question": ["Read n, print n*2.", "Read n, print n*2.", "Print the sum of a and b.", "Add."],
        "starter_code": ["", "", "", "class Solution:\n    def add(self, a, b):"],
        "response": ["r1", "r2", "r3", "r4"],
        "verified": [True, False, True, True],
        "is_passed": [True, False, True, True],
    }
    (tmp_path / "rstar-coder-seed-sft").mkdir()
    pq.write_table(pa.table(rows), tmp_path / "rstar-coder-seed-sft" / "part-0.parquet")
    monkeypatch.setenv("SELFDISTILL_DATA", str(tmp_path))
    found = collect_prompts("rstar-coder-seed-sft")
    assert [p.id for p in found.prompts] == ["q1", "q2", "q3"] and len(found.duplicates) == 1
    assert found.prompts[0].starter_code is None and found.prompts[2].starter_code.startswith("class Solution")
    assert DATASETS["rstar-coder-seed-sft"].hub == ("microsoft/rStar-Coder", "seed_sft", "train")


SEED_SFT = [  # rStar-Coder seed_sft's shape: several responses per question, each with is_passed
    {"question_id": "q1", "question": "Read n, print n*2.", "starter_code": "", "response": "r1", "is_passed": False},
    {"question_id": "q1", "question": "Read n, print n*2.", "starter_code": "", "response": "r2", "is_passed": True},
    {
        "question_id": "q2",
        "question": "Print the sum of a and b.",
        "starter_code": "",
        "response": "r3",
        "is_passed": False,
    },
    {
        "question_id": "q3",
        "question": "Add.",
        "starter_code": "class Solution:\n    def add(self, a, b):",
        "response": "r4",
        "is_passed": True,
    },
    {"question_id": "q4", "question": "Add.", "starter_code": "def add(a, b):", "response": "r5", "is_passed": True},
]


def test_paper_selection_keeps_passed_rows_deduplicated_by_question(tmp_path, monkeypatch):
    """The paper's rule: is_passed rows only, one per question text (starter code aside); "all" keeps
    every question, deduplicated on statement + starter code."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "rstar-coder-seed-sft").mkdir()
    pq.write_table(pa.Table.from_pylist(SEED_SFT), tmp_path / "rstar-coder-seed-sft" / "part-0.parquet")
    monkeypatch.setenv("SELFDISTILL_DATA", str(tmp_path))
    paper = collect_prompts("rstar-coder-seed-sft", selection="paper")
    assert [p.id for p in paper.prompts] == ["q1", "q3"]  # q2 never passed; q4 asks q3's question
    assert paper.not_passed == 2 and paper.duplicates == [
        {"id": "q4", "duplicate_of": "q3", "where": paper.duplicates[0]["where"]}
    ]
    assert paper.summary()["selection"] == "paper" and paper.summary()["not_passed_removed"] == 2
    everything = collect_prompts("rstar-coder-seed-sft")
    assert [p.id for p in everything.prompts] == ["q1", "q2", "q3", "q4"] and len(everything.duplicates) == 1
    # a plain file goes through the same rule; a source without is_passed cannot be selected the paper's way
    path = write_jsonl(tmp_path / "seed.jsonl", SEED_SFT)
    assert [p.id for p in collect_prompts(str(path), selection="paper").prompts] == ["q1", "q3"]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"id": "a", "question": "Sum two numbers."}])
    with pytest.raises(PromptError, match="missing field is_passed"):
        collect_prompts(str(plain), selection="paper")
    with pytest.raises(PromptError, match="prompt_selection 'best': choose one of all, paper"):
        collect_prompts(str(plain), selection="best")


def test_decontamination_by_ngram_and_id():
    from selfdistill.benchmarks import benchmark_texts

    lcb_id, lcb_text = benchmark_texts("livecodebench")[0]
    mbpp_id = benchmark_texts("mbpp")[0][0]

    prompts = [
        Prompt("copy", "Please solve this.\n" + lcb_text),  # a benchmark problem with a new first line
        Prompt(mbpp_id, "A statement that matches nothing at all in any benchmark."),  # same id
        Prompt(
            "fresh",
            "Write a function that returns the number of distinct prime factors of n, and explain nothing else.",
        ),
    ]
    kept, removed, checked = decontaminate_prompts(prompts, ["livecodebench", "mbpp"])
    assert [p.id for p in kept] == ["fresh"]
    assert {(r["id"], r["benchmark"], r["problem_id"]) for r in removed} == {
        ("copy", "livecodebench", lcb_id),
        (mbpp_id, "mbpp", mbpp_id),
    }
    assert [(c["entry"], c["problems"], [o["id"] for o in c["overlap"]]) for c in checked] == [
        ("livecodebench", 400, ["copy"]),
        ("mbpp", 500, [mbpp_id]),
    ]


def test_decontamination_entries_name_the_evaluated_data(tmp_path):
    """An entry is the data an eval reads: a benchmark, its file or hub id, and its release window."""
    from selfdistill.benchmarks import BenchmarkError, benchmark_texts
    from selfdistill.prompts import DecontaminationTarget

    hub = DecontaminationTarget.parse("livecodebench/code_generation_lite@2025-02-01..2025-05-31")
    assert hub == DecontaminationTarget(
        "livecodebench", "livecodebench/code_generation_lite", "2025-02-01", "2025-05-31"
    )
    for entry in (
        "mbpp",
        "jsonl:/data/mine.jsonl",
        "livecodebench@2025-02-01..",
        "livecodebench:lcb.jsonl@..2024-01-31",
    ):
        assert str(DecontaminationTarget.parse(entry)) == entry
    with pytest.raises(BenchmarkError, match="entry 'codeforces' is not NAME"):
        DecontaminationTarget.parse("codeforces")
    # a copy of the benchmark in a file, and a window: only the problems an eval of that window sees count
    copy = tmp_path / "lcb.jsonl"
    copy.write_text((data_dir() / "livecodebench-public.jsonl").read_text())
    problems = dict(benchmark_texts("livecodebench"))
    dates = {p.id: p.metadata["date"] for p in get("livecodebench").problems()}
    september = next(i for i in problems if dates[i].startswith("2023-09"))
    august = next(i for i in problems if dates[i].startswith("2023-08"))
    prompts = [Prompt("sep", "Solve:\n" + problems[september]), Prompt("aug", "Solve:\n" + problems[august])]
    kept, removed, (checked,) = decontaminate_prompts(prompts, [f"livecodebench:{copy}@2023-09-01..2023-09-30"])
    assert [p.id for p in kept] == ["aug"] and [(r["id"], r["problem_id"]) for r in removed] == [("sep", september)]
    assert checked["source"] == str(copy) and checked["problems"] == sum(
        d.startswith("2023-09") for d in dates.values()
    )
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": p.id, "question": p.text} for p in prompts])
    found = collect_prompts(str(path), decontaminate=[f"livecodebench:{copy}@2023-09-01..2023-09-30"])
    assert found.summary()["decontamination"] == [checked]  # what the sample manifest records
    # the paper presets' window is not in the shared copy (2023-05 to 2024-03): an error before any sampling
    with pytest.raises(BenchmarkError, match=r"no problems released in 2025-02-01\.\.2025-05-31"):
        decontaminate_prompts(prompts, ["livecodebench@2025-02-01..2025-05-31"])


def test_decontaminating_leetcode_train_counts():
    """Measured: 72 of the 1890 train problems are benchmark problems (71 of them LiveCodeBench's
    LeetCode problems, verbatim); MBPP train loses 13 near-copies of test problems."""
    found = collect_prompts("leetcode-train", decontaminate=["humaneval", "mbpp", "leetcode", "livecodebench"])
    assert len(found.contaminated) == 72 and len(found.prompts) == 1818
    assert sum(c["benchmark"] == "livecodebench" for c in found.contaminated) == 71


def test_decontamination_skips_a_benchmark_it_cannot_load_here_and_says_so(tmp_path, monkeypatch):
    """Offline with no local copy (a user without ../shared): a benchmark's own data is reported as not
    checked, the rest is checked; data an entry names itself must load."""
    from huggingface_hub import constants

    from selfdistill.benchmarks import DataUnavailable

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("SELFDISTILL_DATA", str(tmp_path / "no-data"))
    copied = get("humaneval").problems()[0]
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "copy", "question": "Solve:\n" + copied.text}, {"id": "fresh", "question": "Count primes below n."}],
    )
    found = collect_prompts(str(path), decontaminate=["humaneval", "mbpp", "livecodebench@2025-02-01..2025-05-31"])
    assert [p.id for p in found.prompts] == ["fresh"] and [c["problem_id"] for c in found.contaminated] == [copied.id]
    assert [(c["entry"], c["problems"]) for c in found.decontamination] == [
        ("humaneval", 164),
        ("mbpp", 0),
        ("livecodebench@2025-02-01..2025-05-31", 0),
    ]
    assert [c["entry"] for c in found.unchecked] == ["mbpp", "livecodebench@2025-02-01..2025-05-31"]
    assert "offline, so not google-research-datasets/mbpp" in found.unchecked[0]["not_checked"]
    assert "livecodebench/code_generation_lite: cannot fetch" in found.unchecked[1]["not_checked"]
    with pytest.raises(DataUnavailable, match="livecodebench/code_generation_lite: cannot fetch"):
        collect_prompts(str(path), decontaminate=["livecodebench:livecodebench/code_generation_lite"])
