"""Loading: every file format, line numbers that match an editor, file:// paths."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from finetune_trainer.data.loading import LoadError, load_file, local_path


def test_jsonl_keeps_line_numbers_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": \n[1, 2]\n', encoding="utf-8")
    loaded = load_file(path)
    assert [row.number for row in loaded.rows] == [1, 3, 5]
    assert loaded.errors == ["line 4: not valid JSON (Expecting value at column 10)"]
    assert loaded.read == 4
    assert loaded.file_format == "jsonl"


def test_jsonl_invalid_utf8_is_a_line_error(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    loaded = load_file(path)
    assert loaded.errors == ["line 2: not valid UTF-8"]


def test_csv_line_numbers_survive_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\nplain,b\ntoo,many,fields\n', encoding="utf-8")
    loaded = load_file(path)
    assert [(row.number, row.data) for row in loaded.rows] == [
        (2, {"text": "two\nlines", "label": "a"}),
        (4, {"text": "plain", "label": "b"}),
    ]
    assert loaded.errors == ["line 5: 3 fields, the header has 2"]


def test_json_array_and_wrapped_array(tmp_path: Path) -> None:
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps([{"text": "x"}, {"text": "y"}]), encoding="utf-8")
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"data": [{"text": "x"}]}), encoding="utf-8")
    assert [row.where for row in load_file(plain).rows] == ["record 1", "record 2"]
    assert len(load_file(wrapped).rows) == 1


def test_json_file_that_is_really_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"text": "x"}\n{"text": "y"}\n', encoding="utf-8")
    loaded = load_file(path)
    assert loaded.file_format == "jsonl" and len(loaded.rows) == 2


def test_parquet_rows_with_nested_messages(tmp_path: Path) -> None:
    pa = importlib.import_module("pyarrow")
    pq = importlib.import_module("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    messages = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    pq.write_table(pa.table({"messages": messages}), path)
    loaded = load_file(path)
    assert loaded.file_format == "parquet"
    assert loaded.rows[0].where == "row 1"
    assert loaded.rows[0].data == {"messages": messages[0]}


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no such file"):
        load_file(tmp_path / "nope.jsonl")
    odd = tmp_path / "data.txt"
    odd.write_text("hello\n", encoding="utf-8")
    with pytest.raises(LoadError, match="fileFormat"):
        load_file(odd)


def test_local_path_from_file_uris(tmp_path: Path) -> None:
    assert local_path("file:///abs/x.jsonl") == Path("/abs/x.jsonl")
    assert local_path("file://data/x.jsonl", tmp_path) == tmp_path / "data" / "x.jsonl"
    assert local_path("rel.csv", tmp_path) == tmp_path / "rel.csv"
