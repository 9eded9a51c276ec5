"""Shared pieces of the realtime delivery tests: config dirs on the binlog server, a stream, and
the rows of each side to compare."""

from pathlib import Path

from hakobu.config import load_config
from hakobu.stream import ClusterStream
from resources.bigquery_client import BigQuerySettings
from resources.io import LiveIO
from tests.cdc.conftest import reader_id
from tests.helpers import tenant_body, write_config

PROJECT = "hakobu-test"


def config_of(root: Path, server, tenants: dict[str, tuple[str, str, str, str]]):
    """tenants: id → (schema, dataset, tables YAML, source extra YAML)."""
    write_config(root, server, {t: tenant_body(s, d, tables, extra)
                                for t, (s, d, tables, extra) in tenants.items()})
    return load_config(root)


def stream_of(config, endpoint: str, work: Path, **kw) -> tuple[ClusterStream, LiveIO]:
    io = LiveIO(BigQuerySettings(endpoint=endpoint, retry_deadline_s=10.0), work_dir=work)
    cs = ClusterStream(config, "main", io, reader_id=reader_id(), flush_every_s=0.2, **kw)
    return cs, io


def catch_up(cs: ClusterStream):
    """Guard, snapshot what is new, stream to the current end of the log, merge everything."""
    cs.guard()
    cs.open()
    cs.snapshot_new()
    return cs.run(blocking=False)


def bq_rows(client, dataset: str, table: str, key: str = "id") -> list[dict]:
    rows = client.query(f"SELECT * FROM `{PROJECT}.{dataset}.{table}` ORDER BY `{key}`").result()
    return [{k: v for k, v in dict(r).items() if not k.startswith("_hakobu")} for r in rows]


def source_rows(sql, schema: str, table: str, cols: str, where: str = "TRUE") -> list[dict]:
    names = [c.strip() for c in cols.split(",")]
    got = sql(f"SELECT {cols} FROM `{schema}`.`{table}` WHERE {where} ORDER BY id")
    return [dict(zip(names, r)) for r in got]
