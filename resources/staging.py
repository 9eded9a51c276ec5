"""The local staging file of a load: Arrow batches appended to one Parquet file, each row with
its extraction order (`_hakobu_seq`), loaded into BigQuery by resources.bigquery_dest."""

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hakobu.bqschema import SEQ


class StagingFile:
    """A Parquet file that batches are appended to; records the extraction order per row."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema.append(pa.field(SEQ, pa.int64()))
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, batch: pa.Table) -> None:
        seq = pa.array(range(self.rows, self.rows + batch.num_rows), type=pa.int64())
        table = batch.append_column(SEQ, seq)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self._writer.write_table(table)
        self.rows += batch.num_rows

    def close(self) -> Path | None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.path if self.rows else None


@contextlib.contextmanager
def staging_file(work_dir: Path, stem: str, schema: pa.Schema) -> Iterator[StagingFile]:
    """A fresh staging file `<stem>.<random>.parquet` in work_dir, deleted on the way out
    (its load job has read it by then, or the table failed)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{stem}.{uuid.uuid4().hex[:8]}.parquet"
    sf = StagingFile(path, schema)
    try:
        yield sf
    finally:
        sf.close()
        path.unlink(missing_ok=True)
