"""The package's shape: no import cycles, the leaf modules stay leaves, and what config repeats of the
benchmark registry keeps up with it."""

import ast
import dataclasses
from pathlib import Path

import selfdistill
from selfdistill.benchmarks import BENCHMARKS
from selfdistill.config import EvalConfig, SampleConfig

PACKAGE = Path(selfdistill.__file__).parent
# shared by sampling and evaluation alike, or by the reports and the model card: they import nothing of the package
LEAVES = ("chat", "rows", "document")


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at the top or inside a function (a lazy import is
    a dependency all the same)."""
    modules = {f.stem for f in PACKAGE.glob("*.py")}
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[name] = deps & modules - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other, directly or through others."""

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

    reachable = {m: reach(m) for m in graph}
    groups = {frozenset({m} | {o for o in reachable[m] if m in reachable[o]}) for m in graph if m in reachable[m]}
    return sorted(map(set, groups), key=sorted)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycles_are_found_through_lazy_imports_too():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_leaf_modules_import_nothing_of_the_package():
    graph = import_graph()
    assert {leaf: graph[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


def test_config_keeps_up_with_the_benchmark_registry():
    """Config sits below the registry (see SampleConfig.decontaminate), so it names benchmarks itself:
    by default, training prompts are decontaminated against every benchmark with data of its own,
    one per problem set, and the eval help lists every benchmark."""
    own_data = [b.name for b in BENCHMARKS.values() if (b.default_file or b.package_file) and not b.same_problems_as]
    assert SampleConfig().decontaminate == own_data
    help_text = next(f.metadata["help"] for f in dataclasses.fields(EvalConfig) if f.name == "benchmark")
    assert [name for name in BENCHMARKS if name in help_text.replace(",", " ").split()] == list(BENCHMARKS)
