"""Files in and out: JSONL or Parquet (pyarrow), chosen by a flag or the file's extension.

Events: a JSONL file (one event or one TAAC seq.jsonl line per line; the line number is the log
order) or Parquet (a file, or a folder of part files read in path order; a row is the event
object of its non-null columns, the row number in that order is its "line"). Items: the
catalog's JSON/JSONL forms, or Parquet with `item_id` and either a `features` column (map,
struct or JSON text) or one column per feature id. Labels and outputs: JSONL or Parquet.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, cast

import orjson

from features.catalog import ItemCatalog, _item
from offline import OfflineError
from offline.batch_io import iter_events

FORMATS = ("jsonl", "parquet")
PARQUET_SUFFIXES = (".parquet", ".pq")
ROWS_PER_BATCH = 65536


def require_pyarrow():
    """pyarrow.parquet, or a one-sentence error saying how to get it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OfflineError("Parquet needs pyarrow, which is not installed: "
                           "pip install 'user-profiles[spark]'") from None
    return pq


def detect(path: str | Path, flag: str | None = None) -> str:
    """The format of a file: the flag when given, else the extension (.jsonl/.json: jsonl;
    .parquet/.pq: parquet); without one, a folder is Parquet part files and a file JSONL."""
    if flag:
        return flag
    p = str(path).rstrip("/")
    if p.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if p.endswith((".jsonl", ".json")):
        return "jsonl"
    return "parquet" if os.path.isdir(p) else "jsonl"


def dlq_path(out: str | Path, fmt: str) -> str | Path:
    """profiles.jsonl -> profiles.dlq.jsonl, profiles.parquet -> profiles.dlq.parquet (a Path
    for a Path; a string, URIs such as hdfs://... intact, for a string)."""
    suffix = ".parquet" if fmt == "parquet" else ".jsonl"
    head, _, name = str(out).rstrip("/").rpartition("/")
    for s in (".jsonl", ".json", *PARQUET_SUFFIXES):
        name = name.removesuffix(s)
    path = f"{head}/{name}.dlq{suffix}" if head else f"{name}.dlq{suffix}"
    return Path(path) if isinstance(out, Path) else path


def row_object(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row as the event object it stands for: a null column is an absent field."""
    return {k: v for k, v in row.items() if v is not None}


def original_text(raw: bytes | dict) -> str:
    """A dead letter's `original`: the line's bytes, or the JSON of a decoded row."""
    if isinstance(raw, dict):
        raw = orjson.dumps(raw, default=str)
    return raw.decode("utf-8", "backslashreplace")


def parquet_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in PARQUET_SUFFIXES)
        if not files:
            raise OfflineError(f"{p} holds no .parquet files")
        return files
    return [p]


# ---------------------------------------------------------------- events, in chunks

@dataclass(frozen=True)
class Chunk:
    """A part of the events input one worker reads: a byte range of a JSONL file, or row groups
    of a Parquet file; `first_line` is the line (row) number of its first line."""
    path: str
    fmt: str
    first_line: int
    start: int = 0                       # JSONL: byte range [start, end)
    end: int = 0
    row_groups: tuple[int, ...] = ()     # Parquet


def plan_chunks(path: str | Path, fmt: str, n: int, count_lines: bool = True) -> list[Chunk]:
    """About n chunks (at most 64 MiB of JSONL each) in log order. count_lines=False: JSONL
    chunks are not read here and each says first_line 1 (the reader counts their lines and
    `numbered_chunks` numbers them)."""
    if not Path(path).exists():
        raise OfflineError(f"events input {path} does not exist")
    if fmt == "parquet":
        return _parquet_chunks(path, n)
    if Path(path).is_dir():
        raise OfflineError(f"{path} is a folder: JSONL events are one file here (a folder of "
                           "JSONL parts runs with --engine spark --events-format jsonl)")
    size = os.path.getsize(path)
    n = max(1, n, -(-size // (64 << 20)))
    bounds = [0]
    with open(path, "rb") as f:
        for i in range(1, n):
            f.seek(max(i * size // n - 1, bounds[-1]))
            f.readline()                 # to the start of the next line
            pos = f.tell()
            if bounds[-1] < pos < size:
                bounds.append(pos)
        bounds.append(size)
        chunks, line = [], 1
        for a, b in zip(bounds, bounds[1:]):
            chunks.append(Chunk(str(path), fmt, line, a, b))
            if not count_lines:
                continue
            f.seek(a)
            left = b - a
            while left:
                block = f.read(min(left, 16 << 20))
                line += block.count(b"\n")
                left -= len(block)
    return chunks


def numbered_chunks(chunks: list[Chunk], lines: list[int]) -> list[Chunk]:
    """The chunks with their true first_line, given the lines (newlines) of each."""
    out, line = [], 1
    for c, n in zip(chunks, lines):
        out.append(replace(c, first_line=line))
        line += n
    return out


def _parquet_chunks(path: str | Path, n: int) -> list[Chunk]:
    pq = require_pyarrow()
    files = parquet_files(path)
    groups: list[tuple[str, int, int]] = []          # (file, row group, rows)
    for file in files:
        meta = pq.ParquetFile(file).metadata
        groups += [(str(file), g, meta.row_group(g).num_rows)
                   for g in range(meta.num_row_groups)]
    total = sum(r for _, _, r in groups)
    per = max(1, -(-total // max(1, n)))
    chunks: list[Chunk] = []
    current: list[int] = []
    current_file: str | None = None      # set with current's first row group
    line, current_rows, first = 1, 0, 1
    for f, g, rows in groups:
        if current and (f != current_file or current_rows >= per):
            chunks.append(Chunk(cast(str, current_file), "parquet", first,
                                row_groups=tuple(current)))
            current, current_rows = [], 0
        if not current:
            current_file, first = f, line
        current.append(g)
        current_rows += rows
        line += rows
    if current:
        chunks.append(Chunk(cast(str, current_file), "parquet", first, row_groups=tuple(current)))
    return chunks


def read_chunk(chunk: Chunk) -> Iterator[tuple[int, bytes | dict]]:
    """(line, raw line bytes or decoded event object) in log order."""
    if chunk.fmt == "parquet":
        pq = require_pyarrow()
        line = chunk.first_line
        pf = pq.ParquetFile(chunk.path)
        for batch in pf.iter_batches(batch_size=ROWS_PER_BATCH, row_groups=list(chunk.row_groups)):
            for row in batch.to_pylist():
                yield line, row_object(row)
                line += 1
        return
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()                      # the text after the last newline is no line
    yield from iter_events(iter(lines), chunk.first_line)


# ---------------------------------------------------------------- items

def load_items(catalog: ItemCatalog, path: str | Path) -> int:
    """Load an item file into the catalog: the JSON forms the catalog reads, or Parquet."""
    if detect(path) != "parquet":
        return catalog.load_file(path)
    n = 0
    for item_id, feats in read_parquet_items(path):
        catalog.put(item_id, feats)
        n += 1
    return n


def read_parquet_items(path: str | Path) -> Iterator[tuple[int, dict]]:
    pq = require_pyarrow()
    for f in parquet_files(path):
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if "item_id" not in names:
            raise OfflineError(f"{f}: an item table needs an item_id column (has {names})")
        for batch in pf.iter_batches(batch_size=ROWS_PER_BATCH):
            for row in batch.to_pylist():
                if "features" in row:
                    feats = row["features"]
                    if isinstance(feats, str):
                        feats = orjson.loads(feats)
                    elif isinstance(feats, list):         # an Arrow map comes as pairs
                        feats = dict(feats)
                    feats = row_object(feats or {})
                else:
                    feats = row_object({k: v for k, v in row.items() if k != "item_id"})
                yield _item(row["item_id"], feats, Path(f))


# ---------------------------------------------------------------- tables out

def profile_arrow_schema(feature_ids: Iterable[str]):
    """The §7 record as an Arrow schema; `features` a struct of one int64 list per feature."""
    import pyarrow as pa
    ids = pa.list_(pa.int64())
    return pa.schema([
        ("user_id", pa.int64()), ("version", pa.int64()), ("as_of", pa.int64()),
        ("trigger", pa.string()),
        ("features", pa.struct([(f, ids) for f in feature_ids])),
        ("interest_tags", pa.list_(pa.string())), ("behavior_preferences", pa.list_(pa.string())),
        ("activity_level", pa.int64()), ("user_type", pa.int64()), ("confidence", pa.float64()),
        ("updated_at", pa.float64())])


DEAD_LETTER_FIELDS = ("reason", "message", "line", "original")


def dead_letter_arrow_schema():
    import pyarrow as pa
    return pa.schema([("reason", pa.string()), ("message", pa.string()), ("line", pa.int64()),
                      ("original", pa.string())])


def check_out(path: str | Path) -> None:
    """A file output cannot replace a folder (say, an earlier Spark engine run's output)."""
    if Path(path).is_dir():
        raise OfflineError(f"{path} is a folder (a Spark engine's output?): remove it or write "
                           "elsewhere")


class RecordWriter:
    """Writes dict records to JSONL (orjson, one per line) or Parquet (row groups of 64 Ki)."""

    def __init__(self, path: str | Path, fmt: str, schema=None):
        self.path, self.fmt, self.schema = Path(path), fmt, schema
        check_out(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.n = 0
        if fmt == "parquet":
            self.pq = require_pyarrow()
            self.writer: Any = None
        else:
            self.f = open(self.path, "wb")

    def write(self, record: dict) -> None:
        self.n += 1
        if self.fmt == "jsonl":
            self.f.write(orjson.dumps(record, default=str) + b"\n")
            return
        self.rows.append(record)
        if len(self.rows) >= ROWS_PER_BATCH:
            self._flush()

    def write_line(self, line: bytes, record: dict | None = None) -> None:
        """A record already encoded as a JSON line (decoded again only for Parquet)."""
        if self.fmt == "jsonl":
            self.n += 1
            self.f.write(line + b"\n")
        else:
            self.write(record if record is not None else orjson.loads(line))

    def _flush(self) -> None:
        import pyarrow as pa
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        if self.writer is None:
            self.schema = table.schema
            self.writer = self.pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.rows = []

    def close(self) -> None:
        if self.fmt == "jsonl":
            self.f.close()
            return
        if self.rows or self.writer is None:
            self._flush()
        self.writer.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | Path, fmt: str | None = None) -> list[dict]:
    """Every record of an output (a file, or a folder of part files as Spark writes), in order."""
    p = Path(path)
    fmt = fmt or ("parquet" if str(p).endswith(PARQUET_SUFFIXES) else "jsonl")
    if fmt == "parquet":
        pq = require_pyarrow()
        out: list[dict] = []
        for f in parquet_files(p):
            out += pq.read_table(f).to_pylist()
        return [_struct_ids(r) for r in out]
    files = sorted(f for f in p.iterdir() if f.name.startswith("part-")) if p.is_dir() else [p]
    return [orjson.loads(line) for f in files for line in f.read_bytes().splitlines() if line]


def _struct_ids(rec: dict) -> dict:
    """Parquet gives every feature of the struct; a feature absent from a record reads None."""
    feats = rec.get("features")
    if isinstance(feats, dict):
        rec["features"] = {k: v for k, v in feats.items() if v is not None}
    return rec
