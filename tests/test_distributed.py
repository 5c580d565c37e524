"""Data-parallel generation and distributed grading on Ray (distributed.py). The pure parts run here;
the rest is a rehearsal on a local cluster of two 1-CPU nodes on loopback (ray.cluster_utils), with
the tiny-random model on the hf backend: files equal to a single-process run's, a node or a sandbox
lost mid-run, a replica that cannot load its model, and no Ray process left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from selfdistill import distributed as D
from selfdistill import evaluate as E
from selfdistill import sandbox
from selfdistill.config import EvalConfig, SampleConfig, fingerprint_dict, load_run_config
from selfdistill.engine import EngineSettings
from selfdistill.generate import Request, SamplingSpec
from selfdistill.manifest import load_manifest, read_jsonl
from selfdistill.sample import sample

STATEMENTS = [
    "Return the sum of two integers a and b.",
    "Reverse a string s.",
    "Count the vowels in a string.",
    "Return the n-th Fibonacci number.",
    "Check whether n is prime.",
    "Return the maximum of a list.",
]
# Ray's own processes, and the actors' (their titles start with ray::)
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "dashboard/agent.py", "runtime_env/agent/main.py", "log_monitor.py")


# ---------------------------------------------------------------------------- pure parts


def node(node_id: str, cpus: int, gpus: int = 0) -> dict:
    return {"NodeID": node_id, "Alive": True, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_replicas_take_a_tensor_parallel_group_of_gpus_or_a_whole_node():
    eight, four, head = node("a", 64, 8), node("b", 32, 4), node("h", 8)
    assert D.replica_bundles([head, eight, four], 1) == ([{"GPU": 1, "CPU": 1}] * 12, "PACK")
    assert D.replica_bundles([head, eight, four], 4) == ([{"GPU": 4, "CPU": 1}] * 3, "PACK")
    with pytest.raises(D.DistributedError, match="needs 8 GPUs on one node; the largest node has 4"):
        D.replica_bundles([four, four], 8)
    assert D.replica_bundles([head, node("c", 2)], 1) == ([{"CPU": 2}] * 2, "STRICT_SPREAD")
    with pytest.raises(D.DistributedError, match="needs GPUs"):
        D.replica_bundles([head], 2)


def test_one_machine_gets_a_replica_per_gpu_or_tensor_parallel_group():
    settings = EngineSettings.of(SampleConfig())
    assert [settings.replicas_here(gpus) for gpus in (0, 1, 8)] == [1, 1, 8]  # 1: one engine in this process
    assert (
        replace(settings, tensor_parallel_size=4).replicas_here(8) == 2
        and replace(settings, tensor_parallel_size=2).replicas_here(2) == 1
    )
    assert (
        replace(settings, local_replicas=1).replicas_here(8) == 1
        and replace(settings, local_replicas=2).replicas_here(0) == 2
    )
    assert D.local_bundles(node("h", 64, 8), 1, 8) == ([{"GPU": 1, "CPU": 1}] * 8, "PACK")
    assert D.local_bundles(node("h", 64, 8), 4, 2) == ([{"GPU": 4, "CPU": 1}] * 2, "PACK")
    assert D.local_bundles(node("h", 2), 1, 2) == ([{"CPU": 1}] * 2, "PACK")  # forced on a CPU: the CPUs shared out
    with pytest.raises(
        D.DistributedError, match="local_replicas=3 x tensor_parallel_size=4 needs 12 GPUs; this machine has 8"
    ):
        D.local_bundles(node("h", 64, 8), 4, 3)
    with pytest.raises(D.DistributedError, match="local_replicas=3 needs a CPU each; this machine has 2"):
        D.local_bundles(node("h", 2), 1, 3)


def test_replicas_that_sample_differently_stop_the_run():
    same = {"backend": "hf", "dtype": "float32", "spec": {"temperature": 1.0}}
    assert D.same_params([same, {**same, "max_num_seqs": 512}]) == same  # engines of other sizes sample alike
    with pytest.raises(
        D.DistributedError, match=r"replicas 0 and 2 sample differently \(dtype: 'float32' vs 'bfloat16'\)"
    ):
        D.same_params([same, same, {**same, "dtype": "bfloat16"}])


def test_strict_grading_refuses_nodes_that_isolate_differently():
    nodes = [{"node_ip": "10.0.0.1", "isolation": "namespaces"}, {"node_ip": "10.0.0.2", "isolation": "basic"}]
    D.check_isolation(nodes, uniform=False)
    D.check_isolation(nodes[:1], uniform=True)
    with pytest.raises(D.DistributedError, match="10.0.0.1 namespaces, 10.0.0.2 basic"):
        D.check_isolation(nodes, uniform=True)


def test_a_replica_takes_whole_units_that_fill_its_engine():
    from collections import deque

    spec = SamplingSpec(n=2)
    queue = deque((k, [Request("p", spec)] * size) for k, size in enumerate([3, 1, 2, 5]))
    assert list(D._take(queue, 8, most=4)) == [0, 1]  # 6 sequences, then 8 with the next unit: full
    assert list(D._take(queue, 1, most=4)) == [2]  # one unit at least
    assert list(D._take(queue, 100, most=1)) == [3] and not queue


def test_ray_address_is_volatile_and_reaches_every_generating_stage():
    run = load_run_config(None, None, ["ray_address=auto"])
    assert run.sample.ray_address == run.eval.ray_address == "auto"
    assert fingerprint_dict(run.sample) == fingerprint_dict(replace(run.sample, ray_address=None))
    assert fingerprint_dict(run.eval) == fingerprint_dict(replace(run.eval, ray_address=None))


def test_an_address_where_no_cluster_answers_fails_at_once():
    pytest.importorskip("ray")
    start = time.monotonic()
    with pytest.raises(D.DistributedError, match="ray_address=127.0.0.1:1: no Ray head answers there"):
        D.connect("127.0.0.1:1")
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------------------- a local cluster

integration = pytest.mark.integration


def ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if any(name in line for name in RAY_PROCESSES)]


def wait_for(condition, seconds: float) -> bool:
    end = time.time() + seconds
    while not condition() and time.time() < end:
        time.sleep(0.1)
    return condition()


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of 1 CPU and a 100 MB object store each; shut down (and checked gone) after the module."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    assert not ray_processes(), "another Ray is running on this machine"
    # On a loaded machine Ray's agents can start slowly, and a raylet gives them 15 s: start again then.
    for attempt in range(3):
        c = cluster_utils.Cluster()
        try:
            c.add_node(num_cpus=1, object_store_memory=100 << 20, include_dashboard=False)
            c.worker = c.add_node(num_cpus=1, object_store_memory=100 << 20)
            break
        except Exception:
            c.shutdown()
            if attempt == 2:
                raise
    yield c
    c.shutdown()
    assert wait_for(lambda: not ray_processes(), 60), f"left after shutdown: {ray_processes()}"


def prompts_file(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "question": s}) + "\n" for i, s in enumerate(STATEMENTS)))
    return path


def sample_config(tmp: Path, out: str, **kw) -> SampleConfig:
    """Six shards of one prompt, two samples each; max_num_seqs=2 gives a replica one shard at a time."""
    base = SampleConfig(
        model="tiny-random",
        prompts=str(prompts_file(tmp / "prompts.jsonl")),
        decontaminate=[],
        n=2,
        max_tokens=16,
        max_model_len=256,
        backend="hf",
        shard_size=1,
        max_num_seqs=2,
        output_dir=str(tmp / out),
    )
    return replace(base, **kw)


def eval_config(tmp: Path, out: str, **kw) -> EvalConfig:
    return EvalConfig(
        model="tiny-random",
        backend="hf",
        benchmark="humaneval",
        limit=4,
        temperatures=[0.0, 1.0],
        n=2,
        ks=[1, 2],
        max_tokens=16,
        max_num_seqs=2,
        workers=1,
        output_dir=str(tmp / out),
        **kw,
    )


def evaluate_in_blocks_of_2(cfg: EvalConfig) -> Path:
    """Blocks of 2 requests: 6 units to spread over the replicas."""
    old, E.BLOCK = E.BLOCK, 2
    try:
        return E.evaluate(cfg)
    finally:
        E.BLOCK = old


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model):
    """The single-process runs that the cluster's must equal."""
    tmp = tmp_path_factory.mktemp("single")
    return sample(sample_config(tmp, "samples")), evaluate_in_blocks_of_2(eval_config(tmp, "eval"))


def files(out: Path, folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / folder).glob("*.jsonl"))}


@integration
def test_two_local_replicas_write_what_one_process_writes(single, tmp_path):
    """No ray_address, local_replicas=2 (what two GPUs get by default): each stage starts a Ray instance
    here, streams its units on both replicas, writes a single process's files, and stops the instance."""
    assert not ray_processes(), "another Ray is running on this machine"
    samples = sample(sample_config(tmp_path, "samples", local_replicas=2))
    assert files(samples, "shards") == files(single[0], "shards")
    placements = load_manifest(samples)["placements"]
    assert sorted(placements) == sorted(files(samples, "shards")) and {p["replica"] for p in placements.values()} == {
        0,
        1,
    }
    assert len({p["node_id"] for p in placements.values()}) == 1 and len({p["pid"] for p in placements.values()}) == 2
    assert wait_for(lambda: not ray_processes(), 60), f"left after the stage: {ray_processes()}"
    (samples / "shards" / "shard-00003.jsonl").unlink()  # resume: the missing shard is made again, the same
    assert files(sample(sample_config(tmp_path, "samples", local_replicas=2)), "shards") == files(single[0], "shards")

    evals = evaluate_in_blocks_of_2(eval_config(tmp_path, "eval", local_replicas=2))
    assert files(evals, "results") == files(single[1], "results")
    assert json.loads((evals / "summary.json").read_text()) == json.loads((single[1] / "summary.json").read_text())
    assert {p["replica"] for p in load_manifest(evals)["placements"].values()} == {0, 1}
    assert wait_for(lambda: not ray_processes(), 60), f"left after the stage: {ray_processes()}"


@integration
def test_two_replicas_write_what_one_process_writes(cluster, single, tmp_path):
    samples = sample(sample_config(tmp_path, "samples", ray_address=cluster.address))
    assert files(samples, "shards") == files(single[0], "shards")
    manifest = load_manifest(samples)
    assert sorted(manifest["placements"]) == sorted(files(samples, "shards"))
    assert {p["node_id"] for p in manifest["placements"].values()} == {
        cluster.head_node.node_id,
        cluster.worker.node_id,
    }
    replies = [r for shard in sorted((samples / "shards").iterdir()) for r in read_jsonl(shard)]
    assert manifest["sessions"][-1]["generated_tokens"] == sum(
        r["reply_tokens"] for r in replies
    )  # each shard came back once
    assert manifest["effective_params"] == load_manifest(single[0])["effective_params"]

    evals = evaluate_in_blocks_of_2(eval_config(tmp_path, "eval", ray_address=cluster.address))
    assert files(evals, "results") == files(single[1], "results")
    assert json.loads((evals / "summary.json").read_text()) == json.loads((single[1] / "summary.json").read_text())
    manifest = load_manifest(evals)
    assert len(manifest["placements"]) == 6 and {p["node_id"] for p in manifest["placements"].values()} == {
        cluster.head_node.node_id,
        cluster.worker.node_id,
    }
    replies = [r for results in sorted((evals / "results").iterdir()) for r in read_jsonl(results)]
    assert manifest["sessions"][-1]["generated_tokens"] == sum(
        r["reply_tokens"] for r in replies
    )  # each block came back once
    assert manifest["effective_params"] == load_manifest(single[1])["effective_params"]
    assert sorted(n["node_id"] for n in manifest["sandbox_nodes"]) == sorted(
        [cluster.head_node.node_id, cluster.worker.node_id]
    )
    with sandbox.Pool(1) as here:
        assert [n["isolation"] for n in manifest["sandbox_nodes"]] == [here.isolation] * 2
    assert wait_for(lambda: not [p for p in ray_processes() if "ray::Replica" in p or "ray::SandboxNode" in p], 60)


GRADED = [
    ("print(1)", None),  # passes
    ("import sys; sys.exit(3)", None),  # fails
    ("while True: pass", None),  # times out
    ("x = bytearray(1 << 34)", None),  # a memory bomb
    sandbox.AssertTests("def f(x):\n    return x + 1\n", "assert f(1) == 2\nassert f(5) == 6\n"),
    sandbox.AssertTests("def f(x):\n    return x\n", "assert f(1) == 2\nassert f(5) == 6\n"),
    sandbox.CallTests("def f(x):\n    return x * 2\n", "f", [[1], [2]], [2, 4]),
]
LIMITS = sandbox.Limits(timeout=2.0, memory_mb=512)


def verdicts(results) -> list[tuple[str, str]]:
    return [(r.status, r.detail) for r in results]


@integration
def test_remote_grading_gives_local_verdicts_in_time(cluster, monkeypatch):
    import ray

    with sandbox.Pool(1, LIMITS) as pool:
        local = verdicts(pool.map(GRADED))
    assert [s for s, _ in local] == ["passed", "failed", "timeout", "memory", "passed", "failed", "passed"]
    put = ray.put
    puts = []
    monkeypatch.setattr(ray, "put", lambda value: puts.append(value) or put(value))
    with D.RayPool(cluster.address, None, LIMITS, uniform=True) as pool:
        assert sorted(n["node_id"] for n in pool.nodes) == sorted([cluster.head_node.node_id, cluster.worker.node_id])
        assert pool.workers == 2 and {n["isolation"] for n in pool.nodes} == {pool.isolation}
        start = time.monotonic()
        assert verdicts(pool.map(GRADED, deadline=60)) == local
        assert time.monotonic() - start < LIMITS.timeout + sandbox.GRACE
        assert len(puts) == 2  # the tests of the two assert jobs (the same tests) and of the call job, each put once
        assert verdicts(pool.map(GRADED[4:], deadline=60)) == local[4:] and len(puts) == 2


@integration
def test_a_lost_sandbox_is_replaced_and_its_jobs_graded_again(cluster):
    jobs = [("import time; time.sleep(3)", None)] * 2 + GRADED[4:]  # each node starts with a sleep
    limits = replace(LIMITS, timeout=10.0)
    with sandbox.Pool(1, limits) as pool:
        local = verdicts(pool.map(jobs))
    with D.RayPool(cluster.address, None, limits, uniform=True) as pool:
        victim = next(n for n in pool.nodes if n["node_id"] == cluster.worker.node_id)
        threading.Timer(1.5, os.kill, (victim["pid"], signal.SIGKILL)).start()  # mid-map: both nodes are sleeping
        assert verdicts(pool.map(jobs, deadline=120)) == local
        replaced = next(n for n in pool.nodes if n["node_id"] == cluster.worker.node_id)
        assert replaced["pid"] != victim["pid"]


@integration
def test_a_replica_that_cannot_load_its_model_stops_the_run(cluster, tmp_path, tiny_model):
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_model, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    start = time.monotonic()
    with pytest.raises(D.DistributedError, match=r"replica \d on node .* could not load .*no-weights"):
        sample(sample_config(tmp_path, "samples", model=str(broken), ray_address=cluster.address))
    assert time.monotonic() - start < 300
    assert wait_for(lambda: not [p for p in ray_processes() if "ray::Replica" in p], 60)


@integration
def test_a_node_lost_mid_run_loses_no_shard(cluster, tmp_path, capfd):
    """The worker node dies while its replica holds a shard: the head's replica redoes that shard, the
    shards written before stay as they are, and all of them equal a single-process run's. Replies of
    128 tokens, so the run outlasts its first shard. Last in this module: the cluster keeps one node."""
    cfg = sample_config(tmp_path, "samples", max_tokens=128, ray_address=cluster.address)
    single = sample(replace(cfg, ray_address=None, output_dir=str(tmp_path / "single")))
    shards = Path(cfg.output_dir) / "shards"
    before: dict[str, int] = {}

    def kill_the_worker_after_a_shard():
        if wait_for(lambda: any(shards.glob("shard-*.jsonl")), 900):
            before.update({p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.jsonl")})
            cluster.remove_node(cluster.worker, allow_graceful=False)

    killer = threading.Thread(target=kill_the_worker_after_a_shard)
    killer.start()
    out = sample(cfg)
    killer.join()
    assert before and len(before) < 6, f"the node should die mid-run, after {sorted(before)}"
    assert files(out, "shards") == files(single, "shards")
    assert {name: (shards / name).stat().st_mtime_ns for name in before} == before  # finished shards kept, not redone
    placements = load_manifest(out)["placements"]
    assert sorted(placements) == sorted(files(out, "shards"))
    assert cluster.head_node.node_id in {p["node_id"] for name, p in placements.items() if name not in before}
    assert "lost replica" in capfd.readouterr().err
