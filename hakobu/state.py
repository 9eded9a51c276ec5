"""What hakobu keeps between runs in a dataset's state table: the watermark of each table
(and the counts a load produced). Pure: resources.bigquery_dest reads and writes the rows."""

import base64
import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Watermark:
    key: tuple | None           # (cursor, *pk) of the last row delivered, source terms
    version: int
    rows_total: int = 0
    # the warehouse: the generation of each column this tenant's slice was filled into
    # (hakobu.sinks.WarehouseSink); None for the customer's and for watermarks written before
    columns: dict[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps({"key": None if self.key is None else [_enc(v) for v in self.key],
                           "rows_total": self.rows_total,
                           **({"columns": self.columns} if self.columns is not None else {})})

    @classmethod
    def from_json(cls, text: str, version: int) -> "Watermark":
        data = json.loads(text)
        key = data.get("key")
        return cls(None if key is None else tuple(_dec(v) for v in key), version,
                   int(data.get("rows_total", 0)), data.get("columns"))

    def display(self) -> str:
        return "-" if self.key is None else str(self.key[0] if len(self.key) else "")


def _enc(v):
    if isinstance(v, dt.datetime):
        return {"t": "datetime", "v": v.isoformat()}
    if isinstance(v, dt.date):
        return {"t": "date", "v": v.isoformat()}
    if isinstance(v, Decimal):
        return {"t": "decimal", "v": str(v)}
    if isinstance(v, (bytes, bytearray)):
        return {"t": "bytes", "v": base64.b64encode(bytes(v)).decode()}
    return v


def _dec(v):
    if isinstance(v, dict):
        t, s = v["t"], v["v"]
        return {"datetime": dt.datetime.fromisoformat, "date": dt.date.fromisoformat,
                "decimal": Decimal, "bytes": base64.b64decode}[t](s)
    return v


@dataclass
class MergeStats:
    rows_staged: int = 0
    bytes_staged: int = 0
    dml_rows: int = 0

