"""Labels in, training rows out (for the engines that hold the labels in one process).

A training row is the label row, every column unchanged and in its order, followed by the
profile fields of `offline.steps.PROFILE_FIELDS` for (user_id, ts)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from offline import OfflineError
from offline.formats import (
    ROWS_PER_BATCH,
    RecordWriter,
    check_out,
    parquet_files,
    profile_arrow_schema,
    require_pyarrow,
)
from offline.steps import PROFILE_FIELDS, label_key


@dataclass
class Labels:
    keys: list[tuple[int, int]]          # (user_id, as_of) per row, in input order
    rows: list[dict] | None = None       # JSONL labels
    table: Any = None                    # Parquet labels (a pyarrow Table)

    def dicts(self, start: int, stop: int) -> list[dict]:
        if self.rows is not None:
            return self.rows[start:stop]
        return self.table.slice(start, stop - start).to_pylist()

    def arrow(self, start: int, stop: int):
        import pyarrow as pa
        if self.table is not None:
            return self.table.slice(start, stop - start)
        rows = cast(list[dict], self.rows)       # JSONL labels: rows, no table
        return pa.Table.from_pylist(rows[start:stop], schema=self.schema())

    def schema(self):
        import pyarrow as pa
        if self.table is not None:
            return self.table.schema
        if not hasattr(self, "_schema"):      # one schema for all batches, every key of any row
            keys = list(dict.fromkeys(k for row in self.rows for k in row))
            self._schema = pa.Table.from_pylist([{k: r.get(k) for k in keys}
                                                 for r in self.rows]).schema
        return self._schema


def read_labels(path: str | Path, fmt: str) -> Labels:
    if not Path(path).exists():
        raise OfflineError(f"labels input {path} does not exist")
    if fmt == "parquet":
        pq = require_pyarrow()
        import pyarrow as pa
        table = pa.concat_tables([pq.read_table(f) for f in parquet_files(path)])
        for name in ("user_id", "ts"):
            if name not in table.column_names:
                raise OfflineError(f"{path}: labels need a {name} column (have "
                                   f"{table.column_names})")
        uids, tss = table.column("user_id").to_pylist(), table.column("ts").to_pylist()
        extra = {c: None for c in table.column_names if c in PROFILE_FIELDS}
        keys = [label_key({"user_id": u, "ts": t, **extra}, f"{path}: row {i + 1}")
                for i, (u, t) in enumerate(zip(uids, tss))]
        if not keys and extra:
            label_key({"user_id": 0, "ts": 0, **extra}, str(path))
        return Labels(keys, table=table)
    rows, keys = [], []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise OfflineError(f"{path}:{lineno}: not valid JSON: {e}") from None
            keys.append(label_key(row, f"{path}:{lineno}"))
            rows.append(row)
    return Labels(keys, rows=rows)


def training_arrow_schema(feature_ids):
    full = profile_arrow_schema(feature_ids)
    import pyarrow as pa
    return pa.schema([full.field(name) for name in PROFILE_FIELDS])


def write_training_set(out: str | Path, fmt: str, labels: Labels,
                       fields: list[dict[str, Any]], feature_ids: list[str]) -> None:
    """Label rows joined with their profile fields (fields[i] belongs to labels row i)."""
    if fmt == "jsonl":
        with RecordWriter(out, "jsonl") as w:
            for start in range(0, len(labels.keys), ROWS_PER_BATCH):
                stop = min(start + ROWS_PER_BATCH, len(labels.keys))
                for row, f in zip(labels.dicts(start, stop), fields[start:stop]):
                    w.write({**row, **f})
        return
    pq = require_pyarrow()
    import pyarrow as pa
    schema = training_arrow_schema(feature_ids)
    check_out(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    writer: Any = None
    for start in range(0, max(1, len(labels.keys)), ROWS_PER_BATCH):
        stop = min(start + ROWS_PER_BATCH, len(labels.keys))
        table = labels.arrow(start, stop) if labels.keys else \
            labels.schema().empty_table() if labels.table is not None else pa.table({})
        added = pa.Table.from_pylist(fields[start:stop], schema=schema)
        for name in PROFILE_FIELDS:
            table = table.append_column(schema.field(name), added.column(name))
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    writer.close()
