import json
import subprocess
import sys

import pytest

from selfdistill.config import SampleConfig
from selfdistill.manifest import ManifestMismatch, RunDir, atomic_write_text, hash_inputs, load_manifest


def test_manifest_records_provenance(tmp_path):
    run = RunDir.open(tmp_path / "s", "sample", SampleConfig(seed=5), inputs={"prompts": "abc"})
    run.finish(records=3)
    m = load_manifest(tmp_path / "s")
    assert m["stage"] == "sample" and m["seed"] == 5 and m["inputs"] == {"prompts": "abc"}
    assert m["config"]["temperature"] == 1.6 and m["records"] == 3
    assert {"torch", "transformers", "vllm", "trl", "selfdistill"} <= set(m["versions"])
    assert m["started_at"] and m["finished_at"] and "git_commit" in m


def test_reopen_same_config_resumes_and_volatile_changes_are_fine(tmp_path):
    RunDir.open(tmp_path / "s", "sample", SampleConfig())
    run = RunDir.open(tmp_path / "s", "sample", SampleConfig(backend="hf", shard_size=8))
    assert len(run.manifest["resumed_at"]) == 1 and not run.finished


def test_refuses_to_mix_configs_and_says_why(tmp_path):
    RunDir.open(tmp_path / "s", "sample", SampleConfig(), inputs={"model": "h1"})
    with pytest.raises(ManifestMismatch, match=r"config.temperature: 1.6 -> 0.7"):
        RunDir.open(tmp_path / "s", "sample", SampleConfig(temperature=0.7), inputs={"model": "h1"})
    with pytest.raises(ManifestMismatch, match=r"inputs.model: 'h1' -> 'h2'"):
        RunDir.open(tmp_path / "s", "sample", SampleConfig(), inputs={"model": "h2"})


def test_refuses_foreign_nonempty_directory(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(ManifestMismatch, match="has no manifest.json"):
        RunDir.open(tmp_path / "s", "sample", SampleConfig())


def test_a_stage_directory_has_one_writer_at_a_time(tmp_path):
    """A second process opening a directory another is writing is refused, and may open it once that
    process is gone, however it ended; the writer itself may open it again."""
    stage = tmp_path / "s"
    code = (
        "import sys, selfdistill.manifest as m, selfdistill.config as c\n"
        f"m.RunDir.open({str(stage)!r}, 'sample', c.SampleConfig())\n"
        "print('open', flush=True); sys.stdin.read()\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "open\n"
    with pytest.raises(ManifestMismatch, match="being written by another process"):
        RunDir.open(stage, "sample", SampleConfig())
    writer.kill()
    writer.wait()
    RunDir.open(stage, "sample", SampleConfig())
    run = RunDir.open(stage, "sample", SampleConfig())
    run.finish()  # and lets the directory go
    assert subprocess.run([sys.executable, "-c", code], input="", capture_output=True, text=True).stdout == "open\n"


def test_hash_inputs_covers_directories(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.txt").write_text("1")
    h1 = hash_inputs([tmp_path / "m"])
    (tmp_path / "m" / "a.txt").write_text("2")
    assert hash_inputs([tmp_path / "m"]) != h1


def test_atomic_write_survives_kill(tmp_path):
    """A writer killed mid-write leaves the old content, never a torn file."""
    target = tmp_path / "f.json"
    atomic_write_text(target, json.dumps({"v": "old"}))
    code = (
        "import os, selfdistill.manifest as m\n"
        "os.fsync = lambda fd: os._exit(9)\n"
        f"m.atomic_write_text({str(target)!r}, 'x' * 10_000_000)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == 9
    assert json.loads(target.read_text()) == {"v": "old"}
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["f.json"]


def test_finished_is_the_manifests_word_and_checks_the_config(tmp_path):
    from selfdistill.config import EvalConfig
    from selfdistill.manifest import finished

    assert not finished(tmp_path / "absent") and not finished(tmp_path)
    run = RunDir.open(tmp_path / "s", "sample", SampleConfig(temperature=1.2), inputs={"model": "h1"})
    assert not finished(run.path, SampleConfig(temperature=0.7))  # unfinished: the stage itself reopens it and refuses
    run.finish()
    assert finished(run.path) and finished(
        run.path, SampleConfig(temperature=1.2, backend="hf")
    )  # volatile fields do not count
    with pytest.raises(ManifestMismatch, match=r"config.temperature: 1.2 -> 0.7"):
        finished(run.path, SampleConfig(temperature=0.7))
    with pytest.raises(ManifestMismatch, match=r"stage: 'sample' -> 'eval'"):
        finished(run.path, EvalConfig())
