"""EvalPlus's sanitizer, reimplemented on Python's own parser: what a function-style reply keeps before
it is graded, so that example code around the solution (prints, calls, `input()`, `if __name__ ==
"__main__":` blocks) cannot fail a correct function.

    sanitize(code, roots, used_by_tests) -> str    the imports, then the top-level code the roots reach
    code_extract(text) -> str          the longest run of lines that parses as Python

It follows `evalplus/sanitize.py` (tree-sitter; evalplus commit 26d6d00) where EvalPlus's rules keep a
correct program whole, and departs from it where they would fail one (docs/grading.md):
  * as EvalPlus: the code is first cut to its longest run of lines that parses (by non-blank lines; the
    earliest wins); every top-level import is kept, wherever it stands; with roots (the entry point, and
    the classes and functions the tests name), only the top-level code they reach through the identifiers
    it mentions is kept, in its order; if nothing is kept, the code cut to parse;
  * unlike EvalPlus, which keeps only a name's first class, function-with-`return` or `NAME = ...`:
    every top-level statement that binds or mutates a reachable name is kept, so decorated definitions
    (`@dataclass class T`, `@cache def f`), functions without `return`, redefinitions (Python calls the
    last one) and top-level loops that fill a table (`for i in ...: f[i] = ...`) survive. LeetCode
    references need each of these. `if __name__ == "__main__":` blocks are always dropped.
"""

from __future__ import annotations

import ast
import re
import warnings

_ANSI_ESCAPE = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")


def _parse(code: str) -> ast.Module | None:
    with warnings.catch_warnings():  # old code has invalid escapes like "\w" in plain strings
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError, MemoryError):
            return None


def code_extract(text: str) -> str:
    """The lines i..j (j > i) that parse and hold the most non-blank lines, the earliest (i, then j) among
    equals; EvalPlus tries every pair, here they are tried from the most non-blank lines down."""
    lines = _ANSI_ESCAPE.sub("", text).split("\n")
    filled = [0]
    for line in lines:
        filled.append(filled[-1] + bool(line.strip()))
    if (
        filled[-1] and len(lines) > 1 and _parse("\n".join(lines)) is not None
    ):  # all of it: up to its last non-blank line
        return "\n".join(lines[: max(2, filled.index(filled[-1]))])
    pairs = sorted(
        ((i, j) for i in range(len(lines)) for j in range(i + 1, len(lines))),
        key=lambda p: (-(filled[p[1] + 1] - filled[p[0]]), p),
    )
    for i, j in pairs:
        if filled[j + 1] - filled[i] == 0:
            break  # EvalPlus keeps a pair only for more non-blank lines than none
        if _parse("\n".join(lines[i : j + 1])) is not None:
            return "\n".join(lines[i : j + 1])
    return lines[0]


def _identifiers(node: ast.AST) -> set[str]:
    """Every identifier in the node, as tree-sitter names them: names, attributes, parameters, keywords,
    definition and import names (a dotted import gives each part)."""
    out = set()
    for n in ast.walk(node):
        for attr in ("id", "attr", "arg", "name", "asname"):
            value = getattr(n, attr, None)
            if isinstance(value, str):
                out.update(value.split(".") if isinstance(n, ast.alias) else [value])
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
    return out


def identifiers(code: str) -> set[str]:
    """Every identifier of a piece of code (none if it does not parse)."""
    tree = _parse(code)
    return _identifiers(tree) if tree else set()


def _written_names(node: ast.stmt) -> tuple[set[str], set[str]]:
    """What a top-level statement binds (definitions, assignment targets, the base name of a subscript or
    attribute it stores to: `f[i] = ...`) and the names whose methods it calls (`memo.update(...)`: a
    mutation when the name is the module's own, not an import's)."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}, set()
    binds, calls = set(), set()
    if _is_main_guard(node):
        return binds, calls
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            binds.add(n.id)
        elif (
            isinstance(n, (ast.Subscript, ast.Attribute))
            and isinstance(n.ctx, (ast.Store, ast.Del))
            and isinstance(n.value, ast.Name)
        ):
            binds.add(n.value.id)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name):
            calls.add(n.func.value.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            binds.add(n.name)
    return binds, calls


def _is_main_guard(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Compare) and "__name__" in _identifiers(test)


def _reachable(roots: set[str], deps: dict[str, set[str]]) -> set[str]:
    seen, todo = set(roots), list(roots)
    while todo:
        for name in deps.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def _source(code: str, node: ast.stmt) -> str:
    """A statement's source lines, decorators included (ast's segment starts at `def`/`class`)."""
    first = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
    return "\n".join(code.split("\n")[first - 1 : node.end_lineno])


def sanitize(code: str, roots: str | set[str] | None = None, used_by_tests: set[str] = frozenset()) -> str:
    """The imports and the top-level statements that bind or mutate what `roots` (the entry point) and the
    classes and functions the tests use (`used_by_tests`: MBPP 367's setup builds its inputs with the
    reply's `Node`; a test's variable names are not roots) reach; every binding statement without roots."""
    roots = {roots} if isinstance(roots, str) else set(roots or ())
    cut = code_extract(code)
    tree = _parse(cut)
    if roots:
        roots |= {
            n.name
            for n in (tree.body if tree else [])
            if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        } & set(used_by_tests)
    imports, statements = [], []
    for node in tree.body if tree else []:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        else:
            statements.append((*_written_names(node), node))
    own = set().union(*(binds for binds, _, _ in statements))
    bindings = [(binds | (calls & own), node) for binds, calls, node in statements if binds | (calls & own)]
    if roots:
        deps: dict[str, set[str]] = {}
        for written, node in bindings:
            for name in written:
                deps.setdefault(name, set()).update(_identifiers(node))
        reachable = _reachable(set(roots), deps)
        bindings = [(written, node) for written, node in bindings if written & reachable]
    kept = "\n".join(_source(cut, node) for node in imports + [node for _, node in bindings]).strip()
    return kept or cut
