"""`ssd run` and `ssd sweep` derive stage configs from the run config, without engines: the samples
are decontaminated against the evaluated benchmark data."""

from selfdistill import config as C
from selfdistill.run import StagePlan, decontaminated_against_eval


def test_samples_are_decontaminated_against_the_evaluated_data():
    paper = C.load_run_config("qwen3-4b-instruct-2507")
    derived = decontaminated_against_eval(paper)
    assert derived.sample.decontaminate == [*paper.sample.decontaminate, "livecodebench@2025-02-01..2025-05-31"]
    assert StagePlan.of(derived).dirs["samples"] != StagePlan.of(paper).dirs["samples"]  # a new entry, new samples
    online = decontaminated_against_eval(C.load_run_config("qwen3-4b-instruct-2507", overrides=["eval.benchmark_path=/data/lcb-v6.jsonl"]))
    assert online.sample.decontaminate[-1] == "livecodebench:/data/lcb-v6.jsonl@2025-02-01..2025-05-31"
    default = C.load_run_config("qwen2.5-coder-0.5b-instruct")  # evaluates humaneval, already an entry: nothing changes
    assert decontaminated_against_eval(default) == default
