"""The reports' document model: sections build a list of blocks, one renderer per format walks it, so
the HTML page and its Markdown twin never drift apart.

    Heading, Para, Table, Image, Code, Details, Row    the blocks
    render_markdown(blocks, title, root=None) -> str   Markdown; images link to their files
    render_html(blocks, title) -> str                  one self-contained page; images inline as base64
    remove_unshown_images(directory, blocks)           delete the PNGs there that no block shows
    markdown_table(header, rows) -> str                a Markdown table alone (the model card's)
    percent(x), percent_ci(score)                      the reports' cells: a fraction, a score with its CI, in %

Used by `ssd report` (report.py, sweep_report.py) and the model card (hub.py). Imports nothing of the package.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    kind: str = ""  # "", "warn" or "muted"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path  # inside the report directory
    caption: str


@dataclass
class Code:
    text: str
    title: str = ""


@dataclass
class Details:
    summary: str
    blocks: list = field(default_factory=list)


@dataclass
class Row:
    """Blocks side by side in HTML (e.g. base and SSD); one after another in Markdown."""

    blocks: list


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


class Interval(Protocol):
    """A score with its confidence interval: results.Score (this module imports nothing of the package)."""

    mean: float
    ci_lo: float
    ci_hi: float


def percent_ci(score: Interval | None) -> str:
    """A score as 'mean [lo, hi]' in %."""
    return "-" if score is None else f"{percent(score.mean)} [{percent(score.ci_lo)}, {percent(score.ci_hi)}]"


# ---------------------------------------------------------------- Markdown


def markdown_table(header: list[str], rows: list[list]) -> str:
    # a "|" inside a cell would end it, a newline the row
    def cell(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    return "\n".join(
        ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    )


def _markdown(blocks: list, root: Path | None) -> list[str]:
    """`root`: the Markdown file's directory; images link relative to it (by file name without one)."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [("> **Note:** " if b.kind == "warn" else "") + b.text, ""]
        elif isinstance(b, Table):
            out += [markdown_table(b.header, b.rows), ""]
        elif isinstance(b, Image):
            out += [
                f"![{b.caption}]({b.path.relative_to(root).as_posix() if root else b.path.name})",
                "",
                f"*{b.caption}*",
                "",
            ]
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            out += ([f"**{b.title}**", ""] if b.title else []) + [fence, b.text.rstrip("\n"), fence, ""]
        elif isinstance(b, Details):
            out += [
                f"<details><summary>{html.escape(b.summary)}</summary>",
                "",
                *_markdown(b.blocks, root),
                "</details>",
                "",
            ]
        elif isinstance(b, Row):
            out += _markdown(b.blocks, root)
        else:
            raise TypeError(f"unknown block {b!r}")
    return out


def render_markdown(blocks: list, title: str, root: Path | None = None) -> str:
    return "\n".join([f"# {title}", "", *_markdown(blocks, root)])


def images(blocks: list) -> list[Path]:
    """The files of every Image in `blocks`, inside Details and Rows too."""
    found = []
    for b in blocks:
        if isinstance(b, Image):
            found.append(b.path)
        elif isinstance(b, Details | Row):
            found += images(b.blocks)
    return found


def remove_unshown_images(directory: Path, blocks: list) -> None:
    """Delete the PNGs under `directory` that `blocks` do not show, so a regenerated report keeps no
    figure of a section that is gone (a run restarted, a stage removed)."""
    shown = {path.resolve() for path in images(blocks)}
    for png in directory.rglob("*.png"):
        if png.resolve() not in shown:
            png.unlink()


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:1100px;margin:2em auto;padding:0 1.5em;color:#1f2328;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #d0d7de;padding-bottom:.3em}h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.6em .9em}.muted{color:#656d76}
figure{margin:.5em 0 1.2em}figure img{max-width:100%;border:1px solid #eaeef2}figcaption{font-size:.85em;color:#656d76}
.row{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1em;align-items:start}.row figure{max-width:none;margin:0}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.7em;overflow:auto;max-height:32em;font-size:.82em;white-space:pre-wrap}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}.title{font-weight:600;margin:.6em 0 .2em}
"""  # noqa: E501 (the stylesheet as the page carries it, one line per group of rules)


def _html(b) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{html.escape(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f'<p class="{b.kind}">{html.escape(b.text)}</p>'
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Image):
        data = base64.b64encode(b.path.read_bytes()).decode()
        return (
            f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
        )
    if isinstance(b, Code):
        return (
            f'<div class="title">{html.escape(b.title)}</div>' if b.title else ""
        ) + f"<pre>{html.escape(b.text)}</pre>"
    if isinstance(b, Details):
        return f"<details><summary>{html.escape(b.summary)}</summary>{''.join(map(_html, b.blocks))}</details>"
    if isinstance(b, Row):
        return '<div class="row">' + "".join(f"<div>{_html(x)}</div>" for x in b.blocks) + "</div>"
    raise TypeError(f"unknown block {b!r}")


def render_html(blocks: list, title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(map(_html, blocks))
        + "\n</body></html>\n"
    )
