"""EvalPlus's sanitizer, reimplemented on Python's own parser: what a function-style reply keeps before
it is graded, so that example code around the solution (prints, calls, `input()`, `if __name__ ==
"__main__":` blocks) cannot fail a correct function.

    sanitize(code, entry_point=None) -> str    the imports, then the definitions the entry point reaches
    code_extract(text) -> str                  the longest run of lines that parses as Python

It follows `evalplus/sanitize.py` (tree-sitter; evalplus commit 26d6d00) rule for rule, including its
odd ones, so verdicts match EvalPlus's (docs/grading.md lists them):
  * the code is first cut to its longest run of lines that parses (by non-blank lines; the earliest wins);
  * every top-level import is kept, wherever it stands;
  * a top-level class, a function with a `return` somewhere in it, or an assignment `name = ...` is a
    definition; the first definition of a name wins and later ones of the same name are dropped;
    decorated definitions, functions without `return`, other statements are dropped;
  * with an entry point, only definitions reachable from it through the identifiers they mention are kept;
  * imports first, then the definitions in their order; if nothing is kept, the code cut to parse.
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
    if filled[-1] and len(lines) > 1 and _parse("\n".join(lines)) is not None:  # all of it: up to its last non-blank line
        return "\n".join(lines[: max(2, filled.index(filled[-1]))])
    pairs = sorted(((i, j) for i in range(len(lines)) for j in range(i + 1, len(lines))),
                   key=lambda p: (-(filled[p[1] + 1] - filled[p[0]]), p))
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


def _definition_name(node: ast.stmt) -> str | None | bool:
    """The name a top-level statement defines (None: an assignment to something else than a name, which
    EvalPlus keeps without a name); False when it is no definition."""
    if isinstance(node, ast.ClassDef) and not node.decorator_list:
        return node.name
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.decorator_list:
        return node.name if any(isinstance(n, ast.Return) for n in ast.walk(node)) else False
    if isinstance(node, ast.Assign):
        return node.targets[0].id if isinstance(node.targets[0], ast.Name) else None
    if isinstance(node, ast.AnnAssign):
        return node.target.id if isinstance(node.target, ast.Name) else None
    return False


def _reachable(entry_point: str, deps: dict[str | None, set[str]]) -> set[str]:
    seen, todo = {entry_point}, [entry_point]
    while todo:
        for name in deps.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def sanitize(code: str, entry_point: str | None = None) -> str:
    """The imports and the definitions `entry_point` needs (every definition without one)."""
    cut = code_extract(code)
    tree = _parse(cut)
    imports, definitions, defined = [], [], set()
    for node in tree.body if tree else []:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        elif (name := _definition_name(node)) is not False and name not in defined:
            defined.add(name)
            definitions.append((name, node))
    if entry_point:
        reachable = _reachable(entry_point, {name: _identifiers(node) for name, node in definitions})
        definitions = [(name, node) for name, node in definitions if name in reachable]
    kept = "\n".join(ast.get_source_segment(cut, node) for node in imports + [node for _, node in definitions]).strip()
    return kept or cut
