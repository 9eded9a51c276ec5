"""The local staging file of a load: Arrow batches appended to one Parquet file, each row with
its extraction order (`_hakobu_seq`), loaded into BigQuery by resources.bigquery_dest."""

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
