"""Read training files into raw rows that remember where they came from.

JSONL, JSON and CSV are parsed with the standard library rather than ``datasets`` on purpose: its
loaders stop at the first bad line, name no line, and coerce mixed column types, while a user who
fixes a dataset needs every bad line listed with its number. Parquet has no lines; its rows are
read with pyarrow (a ``datasets`` dependency) and named by row number.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_FORMATS = ("jsonl", "json", "csv", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class LoadError(Exception):
    """The file as a whole cannot be read (missing, unknown format, not a JSON array, ...)."""


@dataclass
class Row:
    """One record as read, with its position: ``unit`` is "line" for JSONL/CSV, else "record"/"row"."""

    data: Any
    number: int
    unit: str = "line"
    origin: str = ""

    @property
    def where(self) -> str:
        place = f"{self.unit} {self.number}"
        return f"{self.origin} {place}" if self.origin else place


@dataclass
class Loaded:
    """The rows of one file, the line-level errors met while reading it, and its identity."""

    path: str
    file_format: str
    sha256: str
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def read(self) -> int:
        return len(self.rows) + len(self.errors)


def local_path(uri_or_path: str, base_dir: str | Path | None = None) -> Path:
    """A local path from a plain path or a file:// URI; relative ones are taken from ``base_dir``.

    ``file://data/x.jsonl`` is read as the relative path ``data/x.jsonl`` (not as host ``data``),
    which is what people mean when they write it in a manifest next to their data.
    """
    text = uri_or_path
    if text.startswith("file://"):
        text = text[len("file://") :]
        if text.startswith("localhost/"):
            text = text[len("localhost") :]
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def detect_file_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    raise LoadError(f"{path.name}: cannot tell the file format from its name; set dataset.fileFormat")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_file(path: str | Path, file_format: str = "auto", origin: str = "") -> Loaded:
    """Read one file. Raises LoadError when the file cannot be read at all; bad lines go to ``errors``.

    ``origin`` prefixes every position (e.g. the file name of an explicit test file) so that messages
    about several files stay unambiguous.
    """
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    fmt = detect_file_format(path, file_format)
    loaded = Loaded(path=str(path), file_format=fmt, sha256=sha256_of(path))
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
    if fmt not in readers:
        raise LoadError(f"{path.name}: unsupported file format {fmt!r}; use one of {', '.join(FILE_FORMATS)}")
    readers[fmt](path, loaded, origin)
    return loaded


def _prefix(origin: str) -> str:
    return f"{origin} " if origin else ""


def _read_jsonl(path: Path, loaded: Loaded, origin: str) -> None:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                loaded.errors.append(f"{_prefix(origin)}line {number}: not valid UTF-8")
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                loaded.errors.append(
                    f"{_prefix(origin)}line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
                )
                continue
            loaded.rows.append(Row(value, number, "line", origin))


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LoadError(f"{path.name} line {line}: not valid UTF-8") from exc


def _read_json(path: Path, loaded: Loaded, origin: str) -> None:
    """A JSON array of records, or an object holding one such array (``{"data": [...]}``).

    Files named .json are often JSON Lines in fact; those are read as JSONL.
    """
    text = _read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n" in text.strip():
            loaded.file_format = "jsonl"
            _read_jsonl(path, loaded, origin)
            return
        raise LoadError(f"{path.name} line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise LoadError(f"{path.name}: expected a JSON array of records or an object holding one array")
        value = lists[0]
    if not isinstance(value, list):
        raise LoadError(f"{path.name}: expected a JSON array of records, got {type(value).__name__}")
    loaded.rows.extend(Row(item, index, "record", origin) for index, item in enumerate(value, start=1))


def _read_csv(path: Path, loaded: Loaded, origin: str) -> None:
    """CSV (or TSV by extension) with a header line; data lines are numbered as in an editor."""
    text = _read_text(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise LoadError(f"{path.name} line 1: {exc}") from exc
    header = [name.strip() for name in header]
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            loaded.errors.append(f"{_prefix(origin)}line {start}: {exc}")
            last_line = reader.line_num
            continue
        last_line = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            loaded.errors.append(
                f"{_prefix(origin)}line {start}: {len(values)} fields, the header has {len(header)}"
            )
            continue
        loaded.rows.append(Row(dict(zip(header, values, strict=True)), start, "line", origin))


def _read_parquet(path: Path, loaded: Loaded, origin: str) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise LoadError(f"{path.name}: cannot read Parquet ({exc})") from exc
    loaded.rows.extend(
        Row(item, index, "row", origin) for index, item in enumerate(table.to_pylist(), start=1)
    )
