"""The reports' document model: one list of blocks rendered as Markdown and as HTML, cells and text
escaped for each format."""

from pathlib import Path

import pytest

from selfdistill.document import (
    Code,
    Details,
    Heading,
    Image,
    Para,
    Row,
    Table,
    markdown_table,
    percent,
    percent_ci,
    remove_unshown_images,
    render_html,
    render_markdown,
)
from selfdistill.results import Score


def test_markdown_table_escapes_what_would_break_a_row():
    assert markdown_table(["a", "b|c"], [["x | y", "two\nlines"], [1, None]]).splitlines() == [
        "| a | b\\|c |",
        "|---|---|",
        "| x \\| y | two lines |",
        "| 1 | None |",
    ]


def test_markdown_renders_every_block_in_order(tmp_path):
    figure = tmp_path / "figures" / "f.png"
    blocks = [
        Heading("Results"),
        Para("careful", "warn"),
        Table(["k"], [["1"]]),
        Image(figure, "a <plot>"),
        Code("print('```')", "reply"),
        Details("a < b", [Para("inside", "muted")]),
        Row([Heading("left", 3), Heading("right", 3)]),
    ]
    assert render_markdown(blocks, "Title", root=tmp_path).split("\n") == [
        "# Title",
        "",
        "## Results",
        "",
        "> **Note:** careful",
        "",
        "| k |",
        "|---|",
        "| 1 |",
        "",
        "![a <plot>](figures/f.png)",  # relative to the Markdown file's directory
        "",
        "*a <plot>*",
        "",
        "**reply**",
        "",
        "````",  # a longer fence around a reply that holds one
        "print('```')",
        "````",
        "",
        "<details><summary>a &lt; b</summary>",  # raw HTML in Markdown: escaped
        "",
        "inside",
        "",
        "</details>",
        "",
        "### left",
        "",
        "### right",
        "",
    ]
    assert "![a <plot>](f.png)" in render_markdown([Image(figure, "a <plot>")], "t")  # no root: the file name


def test_html_escapes_text_cells_captions_and_code(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG")
    page = render_html(
        [
            Heading("<h1>"),
            Para('a & "b"', "muted"),
            Table(["<th>"], [["<td> & 1"]]),
            Image(png, 'say "hi" <b>'),
            Code("if a < b:\n    pass", "<reply>"),
            Row([Para("one"), Para("two")]),
        ],
        "<title>",
    )
    assert "<title>&lt;title&gt;</title>" in page and "<h1>&lt;title&gt;</h1>" in page
    assert "<h2>&lt;h1&gt;</h2>" in page and '<p class="muted">a &amp; &quot;b&quot;</p>' in page
    assert "<th>&lt;th&gt;</th>" in page and "<td>&lt;td&gt; &amp; 1</td>" in page
    assert 'alt="say &quot;hi&quot; &lt;b&gt;" src="data:image/png;base64,iVBORw=="' in page  # inline, no file link
    assert '<div class="title">&lt;reply&gt;</div><pre>if a &lt; b:\n    pass</pre>' in page
    assert '<div class="row"><div><p class="">one</p></div><div><p class="">two</p></div></div>' in page
    assert "<td>" not in render_html([Para("<td>")], "t")  # text never becomes markup


def test_a_regenerated_report_removes_only_the_figures_it_no_longer_shows(tmp_path):
    figures = tmp_path / "figures"
    for name in ("top.png", "t/in_row.png", "t/in_details.png", "t/gone.png", "t/notes.txt"):
        (figures / name).parent.mkdir(parents=True, exist_ok=True)
        (figures / name).write_bytes(b"x")
    blocks = [
        Image(figures / "top.png", "a"),
        Row([Para("p"), Image(figures / "t/in_row.png", "b")]),
        Details("more", [Row([Image(figures / "t/in_details.png", "c")])]),
    ]
    remove_unshown_images(figures, blocks)
    assert sorted(p.relative_to(figures).as_posix() for p in figures.rglob("*") if p.is_file()) == [
        "t/in_details.png",
        "t/in_row.png",
        "t/notes.txt",
        "top.png",
    ]


@pytest.mark.parametrize("render", [lambda b: render_markdown(b, "t"), lambda b: render_html(b, "t")])
def test_an_unknown_block_is_refused(render):
    with pytest.raises(TypeError, match="unknown block"):
        render([Path("not a block")])


def test_percent_cells():
    assert (percent(None), percent(0.5), percent(1 / 3)) == ("-", "50.0", "33.3")
    assert percent_ci(Score(mean=0.5, ci_lo=0.25, ci_hi=0.755, n_problems=4)) == "50.0 [25.0, 75.5]"
    assert percent_ci(None) == "-"
