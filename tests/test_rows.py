"""The one row reader: every format, where each row came from, and one error policy."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfdistill import rows
from selfdistill.rows import RowError

ROWS = [{"id": "a", "n": 1}, {"id": "b", "n": 2}]


def test_every_format_gives_the_same_rows_and_says_where_each_came_from(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in ROWS)
    (tmp_path / "r.jsonl").write_text(text.replace("\n", "\n\n", 1))  # a blank line is skipped, not counted
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "r.json").write_text(json.dumps(ROWS))
    (tmp_path / "r.json.gz").write_bytes(gzip.compress(json.dumps(ROWS).encode()))
    (tmp_path / "parts").mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[:1]), tmp_path / "parts" / "0.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[1:]), tmp_path / "parts" / "1.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "r.parquet")
    where = {
        name: [w for w, _ in rows.read(tmp_path / name, "train")]
        for name in ("r.jsonl", "r.jsonl.gz", "r.json", "r.parquet", "parts")
    }
    assert where == {
        "r.jsonl": [f"{tmp_path}/r.jsonl:1", f"{tmp_path}/r.jsonl:3"],
        "r.jsonl.gz": [f"{tmp_path}/r.jsonl.gz:1", f"{tmp_path}/r.jsonl.gz:2"],
        "r.json": [f"{tmp_path}/r.json[0]", f"{tmp_path}/r.json[1]"],
        "r.parquet": [f"{tmp_path}/r.parquet[row 0]", f"{tmp_path}/r.parquet[row 1]"],
        "parts": [f"{tmp_path}/parts/0.parquet[row 0]", f"{tmp_path}/parts/1.parquet[row 0]"],
    }
    for name in ("r.jsonl", "r.jsonl.gz", "r.json", "r.json.gz", "r.parquet", "parts"):
        assert [row for _, row in rows.read(str(tmp_path / name), "train")] == ROWS, name
    assert list(rows.jsonl(tmp_path / "r.jsonl")) == [(1, ROWS[0]), (3, ROWS[1])]


def test_a_local_dataset_directory_goes_through_datasets_with_its_split(tmp_path):
    """The code path of a hub id, offline: `datasets` picks the split by file name."""
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    got = list(rows.read(tmp_path, "test"))
    assert [row for _, row in got] == ROWS and got[0][0] == f"{tmp_path}[test]:0"


def test_a_bad_row_raises_naming_file_line_and_what_is_wrong(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"\n')
    with pytest.raises(RowError, match=rf"^{path}:2: invalid JSON at column 11: Expecting ',' delimiter$"):
        list(rows.read(path, "train"))
    path.write_text('{"id": "a"}\n[1, 2]\n')
    with pytest.raises(RowError, match=rf"^{path}:2: expected a JSON object, got list$"):
        list(rows.jsonl(path))
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(RowError, match=rf"^{path}:1: not UTF-8"):
        list(rows.jsonl(path))
    (tmp_path / "r.json").write_text('[{"id": "a"},\n {"id": }]')
    with pytest.raises(RowError, match=rf"^{tmp_path / 'r.json'}:2: invalid JSON at column 9"):
        list(rows.read(tmp_path / "r.json", "train"))
    (tmp_path / "r.json").write_text('{"id": "a"}')
    with pytest.raises(RowError, match="expected a JSON list of objects, got dict"):
        list(rows.read(tmp_path / "r.json", "train"))


def test_bad_rows_can_be_collected_instead_and_the_rest_read(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{oops\n7\n{"id": "b"}\n')
    errors = []
    assert [row["id"] for _, row in rows.read(path, "train", errors=errors)] == ["a", "b"]
    assert errors == [
        {
            "where": f"{path}:2",
            "reason": "invalid JSON at column 2: Expecting property name enclosed in double quotes",
        },
        {"where": f"{path}:3", "reason": "expected a JSON object, got int"},
    ]
    (tmp_path / "r.json").write_text('[{"id": "a"}, "b"]')
    errors = []
    assert [row for _, row in rows.read(tmp_path / "r.json", "train", errors=errors)] == [{"id": "a"}]
    assert errors == [{"where": f"{tmp_path}/r.json[1]", "reason": "expected a JSON object, got str"}]


def test_unreadable_sources_raise_the_callers_own_error(tmp_path):
    class Mine(ValueError):
        pass

    (tmp_path / "r.csv").write_text("id\na\n")
    with pytest.raises(Mine, match=r"r\.csv: unsupported file type"):
        list(rows.read(tmp_path / "r.csv", "train", raises=Mine))
    with pytest.raises(Mine, match="nope.jsonl: no such file, and not a hub id"):
        list(
            rows.read(tmp_path / "nope.jsonl", "train", errors=[], raises=Mine)
        )  # collecting is for rows, not sources
    (tmp_path / "r.jsonl").write_text("{oops\n")
    with pytest.raises(Mine, match=r"r\.jsonl:1: invalid JSON"):
        list(rows.jsonl(tmp_path / "r.jsonl", raises=Mine))
