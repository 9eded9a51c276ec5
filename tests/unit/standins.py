"""Stand-ins for the lead's fakes (tests/fakes/source.py ScriptedSource, tests/fakes/destination.py
InMemoryDestination), with only what the verification tests use, for a branch where those are
not merged yet. Same names, same calls; delete this file once they are (issue #13)."""

import contextlib
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from hakobu.types import ColumnInfo
from resources.bigquery_dest import SEQ, SYNCED_AT, MergeStats, StagingFile


def col(name: str, data_type: str, *, column_type: str | None = None, nullable: bool = True,
        precision: int | None = None, scale: int | None = None,
        datetime_precision: int | None = None) -> ColumnInfo:
    return ColumnInfo(name=name, data_type=data_type, column_type=column_type or data_type,
                      nullable=nullable, precision=precision, scale=scale,
                      datetime_precision=datetime_precision, is_json=data_type == "json")


class ScriptedSource:
    def __init__(self, cluster=None):
        self.cluster = cluster
        self.tables: dict[tuple[str, str], list[dict]] = {}

    def add_table(self, schema, name, columns, primary_key, indexes=None, rows=()):
        self.tables[(schema, name)] = [dict(r) for r in rows]

    def delete(self, schema, name, **key) -> None:
        rows = self.tables[(schema, name)]
        rows[:] = [r for r in rows if any(r[k] != v for k, v in key.items())]

    def visible_rows(self, plan) -> list[dict]:
        rows = self.tables[(plan.schema, plan.table)]
        if plan.tenant_column:
            rows = [r for r in rows if r[plan.tenant_column] == plan.tenant_value]
        return rows


class InMemoryDestination:
    def __init__(self, project="fake-project", dataset="ds", location="US", work_dir=None):
        self.project, self.dataset, self.location = project, dataset, location
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="hakobu-fake-"))
        self.tables: dict[str, list[dict]] = {}
        self.schemas: dict[str, dict[str, str]] = {}
        self.notes: dict[str, dict] = {}

    def table_schema(self, table):
        return self.schemas.get(table)

    def ensure_table(self, table, specs, primary_key, extra=(), **kw):
        if table not in self.schemas:
            self.schemas[table] = {s.bq_name: s.bq_type for s in specs} | {SYNCED_AT: "TIMESTAMP"}
            self.tables[table] = []

    @contextlib.contextmanager
    def staging_file(self, table, schema):
        path = self.work_dir / f"{table}.{id(schema)}.parquet"
        sf = StagingFile(path, schema)
        try:
            yield sf
        finally:
            sf.close()
            path.unlink(missing_ok=True)

    def merge(self, table, files, specs, primary_key, *, extra=(), delete_scope=None, run_id=""):
        staged = [r for f in files for r in pq.read_table(f).to_pylist()]
        target = self.tables[table]
        for r in sorted(staged, key=lambda r: r[SEQ]):
            row = {s.bq_name: r.get(s.bq_name) for s in specs} | {SYNCED_AT: "now"}
            key = tuple(row[k] for k in primary_key)
            for i, t in enumerate(target):
                if tuple(t[k] for k in primary_key) == key:
                    target[i] = row
                    break
            else:
                target.append(row)
        return MergeStats(rows_staged=len(staged), dml_rows=len(staged))

    def read_note(self, table):
        return self.notes.get(table)

    def write_note(self, table, note, run_id):
        self.notes[table] = dict(note)
