"""Beyond one machine, on an existing Ray cluster (`ray_address`: auto, or HOST:PORT of its head), and
across the GPUs of one machine, on a Ray instance started here (address LOCAL: engine.py decides when).

    RayGenerator(model_path, backend, max_model_len, tensor_parallel_size, seed, max_num_seqs, address)
        a Generator (engine.EngineSettings with ray_address) whose units of work, sample shards and
        eval blocks, go to replicas of the model: one per GPU or tensor-parallel group of GPUs, or, on
        a cluster without GPUs, one per node with the smallest node's CPUs; a placement group reserves
        them all at once, so a cluster too small says so instead of waiting. With address LOCAL, a Ray
        instance of this machine alone, started for the generator and stopped when it closes, holding
        `replicas` replicas (local_bundles: of a GPU or tensor-parallel group each, or a share of the CPUs)
    RayPool(address, workers, limits, uniform)
        a sandbox.Pool spread over the nodes: one warm Pool per node, in an actor placed on that node;
        each job's tests go to the object store once, so a node fetches a problem's tests only once

Results equal a single-process run's: a free replica takes whole units, as many as fill its engine,
and streams them as one process would (a request's reply depends on its prompt, spec and seed only;
see generate.py); the stage writes each unit as it arrives, as it does without Ray. Resume, seeds and
files are unchanged; only where a unit ran differs, and the stage's manifest records it (`placements`).

Failures: a replica lost with its process or node hands its unfinished units back, and the others
finish the job (a run that loses every replica stops; its rerun resumes). A replica that cannot load
the model stops the run at once, with the reason. A lost sandbox actor is replaced and its jobs run
again, on the other nodes if its own is gone; what still fails is a `sandbox_error` verdict, which
evaluate regrades on its next run: never a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import socket
import time
from collections import deque
from collections.abc import Hashable, Iterator
from typing import NamedTuple

from rich.console import Console

from . import SelfdistillError
from .generate import Completion, Generator, Progress, Request, SamplingSpec
from .sandbox import Limits, Pool, Result

try:
    import ray
except ImportError:  # the optional `ray` extra; connect() says how to install it
    ray = None

console = Console(stderr=True, highlight=False)
PLACEMENT_TIMEOUT = 120.0  # seconds to reserve the replicas' resources; all of them exist, so only other jobs delay it
START_TIMEOUT = 120.0  # seconds for a sandbox actor to start its pool (a few, unless its node is dying)
# seconds a sandbox actor may answer after a map's deadline (its pool restarts) before its jobs count as timed out
ANSWER_GRACE = 30.0
GRADING_ATTEMPTS = 3  # runs of a job whose sandbox actor was lost, before it is a sandbox_error


class DistributedError(SelfdistillError, RuntimeError):
    """The cluster cannot do the job: no cluster, too few resources, a replica that cannot load."""


# ---------------------------------------------------------------------------- the connection


_connection = {"users": 0, "owned": False}
LOCAL = "local"  # a Ray instance of this machine alone, started by connect and stopped by the last disconnect


def connect(address: str) -> None:
    """Join the cluster at `address` (LOCAL: start one here), once per process; the last `disconnect`
    leaves it (when we joined), which stops a local one."""
    if ray is None:
        what = (
            "several local replicas (more than one GPU, or local_replicas > 1)" if address == LOCAL else "ray_address"
        )
        raise DistributedError(
            f"{what} need Ray, which is not installed: pip install 'selfdistill[ray]' (or set local_replicas=1)"
        )
    if not ray.is_initialized():
        if address != LOCAL:
            _check_reachable(address)
        try:
            # replicas' logs stay on their nodes (/tmp/ray/session_latest/logs): they would break the progress bar
            ray.init(
                address=address,
                logging_level=logging.WARNING,
                log_to_driver=False,
                **({"include_dashboard": False} if address == LOCAL else {}),
            )
        except ConnectionError as e:
            raise DistributedError(
                f"ray_address={address}: no Ray cluster there ({e}); start one with `ray start --head`"
            ) from None
        _connection["owned"] = True
    _connection["users"] += 1


def _check_reachable(address: str) -> None:
    """A HOST:PORT where nothing answers fails here: ray.init would retry it for minutes."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or "://" in host:
        return  # auto, or another form that Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise DistributedError(
            f"ray_address={address}: no Ray head answers there ({e.strerror or e}); start one with `ray start --head`"
        ) from None


def disconnect() -> None:
    _connection["users"] -= 1
    if _connection["users"] == 0 and _connection["owned"]:
        ray.shutdown()
        _connection["owned"] = False


def _alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


def _node_name(node_id: str) -> str:
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), None)
    return f"node {node['NodeManagerAddress']} ({node_id[:12]})" if node else f"node {node_id[:12]}"


def _here() -> dict:
    """Where the calling actor runs."""
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }


def _reason(error: Exception) -> str:
    """The last line of a remote error: the exception that ended the actor, without Ray's traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# ---------------------------------------------------------------------------- generation


class Replica:
    """One generator in one Ray actor."""

    def __init__(
        self,
        model_path: str,
        backend: str,
        max_model_len: int,
        tensor_parallel_size: int,
        seed: int,
        max_num_seqs: int | None,
        targets: bool = False,
        dtype: str = "auto",
    ):
        from .generate import load_generator

        self.generator = load_generator(
            model_path, backend, max_model_len, tensor_parallel_size, seed, max_num_seqs, targets, dtype
        )

    def where(self) -> dict:
        return {**_here(), "gpus": [str(g) for g in ray.get_gpu_ids()], "max_num_seqs": self.generator.max_num_seqs}

    def effective_params(self, spec: SamplingSpec) -> dict:
        return self.generator.effective_params(spec)

    def stream_units(
        self, units: dict[Hashable, list[Request]], max_in_flight: int | None
    ) -> Iterator[tuple[Hashable, list[list[Completion]]]]:
        """The units in one stream on this replica, each sent back as it finishes (a Ray streaming generator)."""
        for key, completions, _ in self.generator.stream_units(units, max_in_flight):
            yield key, completions


def replica_bundles(nodes: list[dict], tensor_parallel_size: int) -> tuple[list[dict], str]:
    """The resources of each replica and the placement strategy: a tensor-parallel group of GPUs on
    one node (and a CPU) per replica, as many as the nodes' GPUs hold; without GPUs, one replica per
    node (STRICT_SPREAD), each with the CPUs of the smallest node, which its torch threads use."""
    tp = tensor_parallel_size
    gpus = [int(n["Resources"].get("GPU", 0)) for n in nodes]
    if any(gpus):
        replicas = sum(g // tp for g in gpus)
        if not replicas:
            raise DistributedError(
                f"tensor_parallel_size={tp} needs {tp} GPUs on one node; the largest node has {max(gpus)}"
            )
        return [{"GPU": tp, "CPU": 1}] * replicas, "PACK"
    if tp != 1:
        raise DistributedError(f"tensor_parallel_size={tp} needs GPUs; the Ray cluster has none")
    cpus = [int(n["Resources"].get("CPU", 0)) for n in nodes if n["Resources"].get("CPU", 0) >= 1]
    if not cpus:
        raise DistributedError("the Ray cluster has no CPU to run a replica on")
    return [{"CPU": min(cpus)}] * len(cpus), "STRICT_SPREAD"


def local_bundles(node: dict, tensor_parallel_size: int, replicas: int) -> tuple[list[dict], str]:
    """`replicas` replicas on this machine's one node: a tensor-parallel group of its GPUs each, or
    without GPUs an equal share of its CPUs each."""
    tp, gpus, cpus = tensor_parallel_size, int(node["Resources"].get("GPU", 0)), int(node["Resources"].get("CPU", 0))
    if gpus:
        if replicas * tp > gpus:
            raise DistributedError(
                f"local_replicas={replicas} x tensor_parallel_size={tp} needs {replicas * tp} "
                f"GPUs; this machine has {gpus}"
            )
        return [{"GPU": tp, "CPU": 1}] * replicas, "PACK"
    if tp != 1:
        raise DistributedError(f"tensor_parallel_size={tp} needs GPUs; this machine has none")
    if replicas > cpus:
        raise DistributedError(f"local_replicas={replicas} needs a CPU each; this machine has {cpus}")
    return [{"CPU": cpus // replicas}] * replicas, "PACK"


def same_params(params: list[dict]) -> dict:
    """The replicas' effective parameters when all are the same; replicas that differ (another dtype,
    device or library version on some node) would sample other distributions, so they stop the run.
    max_num_seqs may differ: vLLM sizes it by the GPU's memory, and it changes speed, not replies."""
    for i, p in enumerate(params[1:], 1):
        differ = sorted(k for k in (p.keys() | params[0].keys()) - {"max_num_seqs"} if p.get(k) != params[0].get(k))
        if differ:
            raise DistributedError(
                f"replicas 0 and {i} sample differently "
                f"({'; '.join(f'{k}: {params[0].get(k)!r} vs {p.get(k)!r}' for k in differ)}): "
                "every node needs the same hardware class and library versions"
            )
    return params[0]


class RayGenerator(Generator):
    """Replicas of one model on a Ray cluster, behind the Generator interface's stream_units (what the
    stages call): every replica the cluster holds, or the first `replicas`; on LOCAL, `replicas` of them.
    The tokenizer is loaded here too: the stages render prompts with it."""

    def __init__(
        self,
        model_path: str,
        backend: str,
        max_model_len: int,
        tensor_parallel_size: int,
        seed: int,
        max_num_seqs: int | None,
        address: str,
        replicas: int | None = None,
        targets: bool = False,
        dtype: str = "auto",
    ):
        super().__init__(model_path, max_model_len, seed)
        self.address = address
        self.targets = targets
        self.dtype = dtype
        self._group = None
        self._actors: list = []
        connect(address)
        try:
            self._start(backend, tensor_parallel_size, max_num_seqs, replicas)
        except BaseException:
            self.close()
            raise

    def _start(self, backend: str, tensor_parallel_size: int, max_num_seqs: int | None, replicas: int | None) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self.address == LOCAL:
            bundles, strategy = local_bundles(_alive_nodes()[0], tensor_parallel_size, replicas)
        else:
            bundles, strategy = replica_bundles(_alive_nodes(), tensor_parallel_size)
            bundles = bundles[:replicas]
        self._group = placement_group(bundles, strategy=strategy)
        try:
            ray.get(self._group.ready(), timeout=PLACEMENT_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise DistributedError(
                f"the Ray cluster could not reserve {len(bundles)} replicas of {bundles[0]} in "
                f"{PLACEMENT_TIMEOUT:.0f} s: other jobs hold its resources"
            ) from None
        where = "a Ray instance on this machine" if self.address == LOCAL else f"the Ray cluster at {self.address}"
        console.print(
            f"starting {len(bundles)} replica{'s' if len(bundles) > 1 else ''} of "
            f"{self.model_path} ({backend}) on {where}"
        )
        actor = ray.remote(Replica)
        self._actors = [
            actor.options(
                num_cpus=b.get("CPU", 0),
                num_gpus=b.get("GPU", 0),
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self._group, placement_group_bundle_index=i),
            ).remote(
                self.model_path,
                backend,
                self.max_model_len,
                tensor_parallel_size,
                self.seed,
                max_num_seqs,
                self.targets,
                self.dtype,
            )
            for i, b in enumerate(bundles)
        ]
        self.replicas = self._wait_loaded()
        self.max_num_seqs = min(r["max_num_seqs"] for r in self.replicas)

    def _wait_loaded(self) -> list[dict]:
        """Each replica's whereabouts once its model is loaded; the first that fails stops the run."""
        pending = {actor.where.remote(): i for i, actor in enumerate(self._actors)}
        replicas: list[dict] = [{}] * len(self._actors)
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready)
            try:
                replicas[i] = {"replica": i, **ray.get(ready)}
            except ray.exceptions.RayActorError as e:
                node = ray.util.placement_group_table(self._group)["bundles_to_node_id"].get(i, "")
                raise DistributedError(
                    f"replica {i} on {_node_name(node)} could not load {self.model_path}: {_reason(e)}"
                ) from None
        return replicas

    def effective_params(self, spec: SamplingSpec) -> dict:
        return same_params(ray.get([actor.effective_params.remote(spec) for actor in self._live()]))

    def _live(self) -> list:
        return [actor for actor in self._actors if actor is not None]

    def stream_units(
        self, units: dict[Hashable, list[Request]], max_in_flight: int | None = None, progress: Progress | None = None
    ) -> Iterator[tuple[Hashable, list[list[Completion]], dict]]:
        """Whole units to free replicas, each replica as many as fill max_in_flight sequences (default:
        its engine's max_num_seqs) but no more than its share of what is left, streamed there as one;
        (key, completions, the replica's whereabouts) as each unit finishes, in no fixed order. A lost
        replica's unfinished units go back to the front of the queue."""
        queue = deque(units.items())
        free = list(range(len(self._actors)))
        calls: dict = {}  # ObjectRefGenerator -> (replica, its units not yet back)
        while queue or calls:
            share = -(
                -len(queue) // len(self._live())
            )  # the last units spread over the replicas, not all to the first one free
            while free and queue:  # refilled before each yield, so replicas keep working while the stage writes
                i = free.pop(0)
                group = _take(queue, max_in_flight or self.replicas[i]["max_num_seqs"], share)
                calls[self._actors[i].stream_units.options(num_returns="streaming").remote(group, max_in_flight)] = (
                    i,
                    group,
                )
            (call,), _ = ray.wait(list(calls), num_returns=1)
            i, group = calls[call]
            try:
                key, completions = ray.get(next(call))
            except StopIteration:
                del calls[call]
                free.append(i)
                continue
            except ray.exceptions.RayActorError as e:
                del calls[call]
                queue.extendleft(reversed(group.items()))
                self._lose(i, e)
                continue
            del group[key]
            if progress:
                progress(sum(map(len, completions)), sum(len(c.token_ids) for cs in completions for c in cs))
            yield key, completions, self.replicas[i]

    def _lose(self, i: int, error: Exception) -> None:
        where = self.replicas[i]
        console.print(
            f"[yellow]lost replica {i}[/] on {_node_name(where['node_id'])}: {_reason(error)}; "
            "the other replicas take its units"
        )
        self._actors[i] = None
        if not self._live():
            raise DistributedError(
                f"every replica was lost (the last on {_node_name(where['node_id'])}); "
                "rerun the same command to resume"
            )

    def close(self) -> None:
        for actor in self._live():
            ray.kill(actor)
        self._actors = []
        if self._group is not None:
            ray.util.remove_placement_group(self._group)
            self._group = None
        if self.address:
            disconnect()
            self.address = None
        super().close()


def _take(queue: deque, sequences: int, most: int) -> dict[Hashable, list[Request]]:
    """Units from the front of `queue` until their requests fill `sequences` (one unit at least, `most` at most)."""
    group: dict[Hashable, list[Request]] = {}
    filled = 0
    while queue and len(group) < most and (not group or filled < sequences):
        key, unit = queue.popleft()
        group[key] = unit
        filled += sum(r.spec.n for r in unit)
    return group


# ---------------------------------------------------------------------------- grading


class _Shipped(NamedTuple):
    """A test job as sent to a node: its tests (everything but the program) in the object store."""

    tests: object  # ray.ObjectRef of the job with program ""
    program: str


class SandboxNode:
    """A warm sandbox.Pool on one node, in one Ray actor."""

    def __init__(self, workers: int, limits: Limits):
        self.pool = Pool(workers, limits)  # strict isolation raises SandboxUnavailable here

    def where(self) -> dict:
        return {**_here(), "isolation": self.pool.isolation, "workers": self.pool.workers}

    def map(self, shipped: list, deadline: float | None) -> list[Result]:
        refs = list({s.tests for s in shipped if isinstance(s, _Shipped)})
        tests = dict(zip(refs, ray.get(refs), strict=True))
        jobs = [
            dataclasses.replace(tests[s.tests], program=s.program) if isinstance(s, _Shipped) else s for s in shipped
        ]
        return self.pool.map(jobs, deadline)


def check_isolation(nodes: list[dict], uniform: bool) -> None:
    """`uniform`: refuse nodes that sandbox differently (namespaces on some, basic on others), where a
    verdict could depend on the node that gave it."""
    if uniform and len({n["isolation"] for n in nodes}) > 1:
        modes = ", ".join(f"{n['node_ip']} {n['isolation']}" for n in nodes)
        raise DistributedError(
            f"the nodes sandbox differently ({modes}); strict grading needs one isolation mode on every node"
        )


class RayPool:
    """sandbox.Pool's interface (map, workers, limits, isolation) over one SandboxNode per node.
    `workers`: slots per node (None: the node's CPUs). `uniform`: see check_isolation."""

    def __init__(self, address: str, workers: int | None, limits: Limits, uniform: bool):
        self.address, self.workers_per_node, self.limits = address, workers, limits
        self._nodes: dict[str, tuple] = {}  # node id -> (actor, whereabouts)
        self._tests: dict[bytes, object] = {}  # content hash -> ObjectRef of a job's tests
        connect(address)
        try:
            self._start(_alive_nodes())
            check_isolation(self.nodes, uniform)
        except BaseException:
            self.close()
            raise

    def _start(self, nodes: list[dict]) -> None:
        """A SandboxNode on each of `nodes`, all starting at once."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actors = {}
        for node in nodes:
            workers = self.workers_per_node or max(1, int(node["Resources"].get("CPU", 1)))
            actors[node["NodeID"]] = (
                ray.remote(SandboxNode)
                .options(
                    num_cpus=0,
                    max_restarts=0,  # sandboxed programs are not Ray work: they reserve no CPU
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                )
                .remote(workers, self.limits)
            )
        for node_id, actor in actors.items():
            try:
                self._nodes[node_id] = (actor, ray.get(actor.where.remote(), timeout=START_TIMEOUT))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                ray.kill(actor)
                raise DistributedError(f"the sandbox on {_node_name(node_id)} did not start: {_reason(e)}") from None

    @property
    def nodes(self) -> list[dict]:
        """Each node's sandbox: where, isolation mode, workers (for the manifest)."""
        return [where for _, where in self._nodes.values()]

    @property
    def workers(self) -> int:
        return sum(where["workers"] for where in self.nodes)

    @property
    def isolation(self) -> str:
        modes = {where["isolation"] for where in self.nodes}
        return modes.pop() if len(modes) == 1 else "mixed"

    def map(self, jobs: list, deadline: float | None = None) -> list[Result]:
        """Pool.map over the nodes, in proportion to their workers. Jobs of a lost actor run again
        (GRADING_ATTEMPTS in all) on a fresh actor, or on the other nodes when their node is gone."""
        end = time.monotonic() + deadline if deadline is not None else None
        results: list[Result | None] = [None] * len(jobs)
        todo = list(range(len(jobs)))
        for _ in range(GRADING_ATTEMPTS):
            if not todo or not self._nodes:
                break
            todo = self._map_once(jobs, todo, end, results)
        for i in todo:
            results[i] = Result(
                "sandbox_error",
                None,
                "",
                "",
                0.0,
                0.0,
                detail="the sandbox actor grading it was lost",
                isolation=self.isolation,
            )
        return results

    def _map_once(self, jobs: list, todo: list[int], end: float | None, results: list) -> list[int]:
        """One try of jobs `todo`, filling `results`; returns the jobs whose actor was lost."""
        slots = [node for node, (_, where) in self._nodes.items() for _ in range(where["workers"])]
        shares: dict[str, list[int]] = {}
        for k, i in enumerate(
            todo
        ):  # interleaved: a reply's blocks and a slow problem's replies spread over the nodes
            shares.setdefault(slots[k % len(slots)], []).append(i)
        left = None if end is None else max(0.0, end - time.monotonic())
        calls = {
            self._nodes[node][0].map.remote([self._ship(jobs[i]) for i in share], left): node
            for node, share in shares.items()
        }
        done, late = ray.wait(
            list(calls), num_returns=len(calls), timeout=None if left is None else left + ANSWER_GRACE
        )
        retry = []
        for ref in late:  # the actor neither answered nor died: as Pool.map, what the deadline cut is a timeout
            node = calls[ref]
            for i in shares[node]:
                results[i] = Result(
                    "timeout",
                    None,
                    "",
                    "",
                    0.0,
                    0.0,
                    detail=f"the sandbox on {_node_name(node)} did not answer before the deadline",
                    isolation=self.isolation,
                )
            self._replace(node)
        for ref in done:
            node = calls[ref]
            try:
                for i, r in zip(shares[node], ray.get(ref), strict=True):
                    results[i] = r
            except ray.exceptions.RayActorError as e:
                console.print(
                    f"[yellow]lost the sandbox[/] on {_node_name(node)}: {_reason(e)}; grading its "
                    f"{len(shares[node])} jobs again"
                )
                retry += shares[node]
                self._replace(node)
        return sorted(retry)

    def _ship(self, job):
        """A test job as _Shipped, its tests put in the object store once per distinct content."""
        if not dataclasses.is_dataclass(job):
            return job  # a plain (program, stdin) run
        tests = dataclasses.replace(job, program="")
        key = hashlib.sha256(pickle.dumps(tests)).digest()
        if key not in self._tests:
            self._tests[key] = ray.put(tests)
        return _Shipped(self._tests[key], job.program)

    def _replace(self, node_id: str) -> None:
        """A new actor on the node, if the node is still alive."""
        actor, _ = self._nodes.pop(node_id)
        ray.kill(actor)
        alive = [n for n in _alive_nodes() if n["NodeID"] == node_id]
        try:
            self._start(alive)
        except DistributedError as e:  # the node is dying: the other nodes take its jobs
            console.print(f"[yellow]{e}[/]")

    def close(self) -> None:
        for actor, _ in self._nodes.values():
            ray.kill(actor)
        self._nodes = {}
        self._tests = {}
        if self.address:
            disconnect()
            self.address = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
