"""An in-memory destination behind the Destination port (hakobu.ports.Destination): one dataset
as Python dicts, with BigQuery's semantics where the engine depends on them.

Modelled: tables with typed columns (created, evolved by the same pure plan_evolution as real
BigQuery: added, dropped by a policy, decimals widened, other type changes refused), staging
files loaded and MERGEd on the key (the last row read of a key wins, as ROW_NUMBER() over
_hakobu_seq does), `delete_scope` "TRUE" deleting target rows missing from a complete read,
atomic replace and swap, compare-and-set watermarks with versions, verification notes.
Not modelled: SQL (the engine sends none through the ports), quotas, locations, IAM.
`fail_on` makes one operation fail once, for crash tests.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from hakobu.errors import LoadError
from hakobu.bqschema import (SEQ, SYNCED_AT, BqType, Evolution, LiveColumn, plan_evolution,
                             source_notes)
from hakobu.state import MergeStats, Watermark
from resources.staging import staging_file
from tests.fakes.checks import FakeDestinationChecks


class InMemoryDestination(FakeDestinationChecks):
    def __init__(self, project: str = "fake-project", dataset: str = "ds",
                 location: str = "US", work_dir: Path | None = None):
        self.project, self.dataset, self.location = project, dataset, location
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="hakobu-fake-"))
        self.exists = False
        self.tables: dict[str, list[dict]] = {}            # BigQuery names → rows
        self.schemas: dict[str, dict[str, str]] = {}       # table → {column: type}
        self.descriptions: dict[str, dict[str, str]] = {}
        self.state: dict[str, tuple[str, int]] = {}        # table → (watermark json, version)
        self.notes: dict[str, dict] = {}
        self.jobs: list[tuple[str, str]] = []              # (operation, table), in order
        self.fail_on: dict[str, Exception] = {}            # operation → raised once

    # -- helpers --------------------------------------------------------------------------

    def _job(self, op: str, table: str) -> None:
        self.jobs.append((op, table))
        exc = self.fail_on.pop(op, None)
        if exc is not None:
            raise exc

    def rows_of(self, table: str) -> list[dict]:
        """The table's rows without hakobu's bookkeeping column (what a customer sees)."""
        return [{k: v for k, v in r.items() if k != SYNCED_AT} for r in self.tables[table]]

    # -- dataset --------------------------------------------------------------------------

    def ensure_dataset(self, labels: dict | None = None) -> bool:
        created, self.exists = not self.exists, True
        return created

    def check_dataset(self, retry_deadline_s: float = 20.0) -> bool:
        return self.exists

    def ensure_state_table(self) -> None:
        self._job("ensure_state_table", "_hakobu_state")

    def drop_stale_staging(self) -> list[str]:
        return []

    def prefetch_watermarks(self, tables: list[str]) -> None:
        return None

    # -- tables ---------------------------------------------------------------------------

    def columns(self, table: str) -> dict[str, LiveColumn] | None:
        if table not in self.schemas:
            return None
        desc = self.descriptions.get(table, {})
        return {n.lower(): LiveColumn(n, BqType.parse(t), desc.get(n))
                for n, t in self.schemas[table].items()}

    def table_schema(self, table: str) -> dict[str, str] | None:
        cols = self.columns(table)
        return None if cols is None else {k: str(c.type) for k, c in cols.items()}

    def table_rows(self, table: str) -> int | None:
        return len(self.tables[table]) if table in self.schemas else None

    def ensure_table(self, table, specs, primary_key, extra=(), cluster_first=(), remove=None,
                     tenant=None) -> Evolution:
        self._job("ensure_table", table)
        columns = [(s.bq_name, s.bq_type) for s in specs] + list(extra) + [(SYNCED_AT,
                                                                            "TIMESTAMP")]
        if table not in self.schemas:
            self.schemas[table] = dict(columns)
            self.tables[table] = []
            self.descriptions[table] = source_notes(specs)
            return Evolution(created=True)
        plan = plan_evolution(self.columns(table), columns, remove)
        if plan.refused:
            raise LoadError(f"type change refused: {'; '.join(plan.refused)}", table=table)
        evo = Evolution()
        for name, why in plan.drop.items():
            self.schemas[table].pop(name, None)
            for r in self.tables[table]:
                r.pop(name, None)
            evo.removed[name] = why
        for name, (have, to) in plan.widen.items():
            self.schemas[table][name] = str(to)
            evo.widened[name] = (str(have), str(to))
        for name, ddl in plan.add:
            self.schemas[table][name] = ddl
            for r in self.tables[table]:
                r[name] = None
            evo.added.append(name)
        return evo

    def create_shadow(self, shadow, specs, primary_key, *, extra=(), tenant=None) -> None:
        self.drop_table(shadow)
        InMemoryDestination.ensure_table(self, shadow, specs, primary_key, extra=extra,
                                         tenant=tenant)

    def describe_columns(self, table: str, descriptions: dict[str, str]) -> None:
        self.descriptions.setdefault(table, {}).update(descriptions)

    def drop_leftovers(self, names: list[str], columns: set[str]) -> list[str]:
        out = []
        for n in names:
            if n in self.schemas and columns & {c.lower() for c in self.schemas[n]}:
                self.drop_table(n)
                out.append(n)
        return out

    def list_tables(self, prefixes: tuple[str, ...]) -> list[str]:
        return [t for t in self.schemas if t.startswith(prefixes)]

    def drop_table(self, table: str) -> None:
        self.schemas.pop(table, None)
        self.tables.pop(table, None)

    def count(self, table: str) -> int:
        return len(self.tables[table])

    # -- staging and merge ----------------------------------------------------------------

    def staging_file(self, table: str, schema):
        return staging_file(self.work_dir, f"{self.dataset}.{table}", schema)

    def _staged(self, files: list[Path]) -> list[dict]:
        rows = []
        for f in files:
            rows += pq.read_table(f).to_pylist()
        return rows

    def merge(self, table, files, specs, primary_key, *, extra=(), delete_scope=None,
              run_id="") -> MergeStats:
        self._job("merge", table)
        staged = self._staged(files)
        latest: dict[tuple, dict] = {}
        for r in sorted(staged, key=lambda r: r[SEQ]):
            latest[tuple(r[k] for k in primary_key)] = r
        target = self.tables[table]
        index = {tuple(r[k] for k in primary_key): i for i, r in enumerate(target)}
        names = [s.bq_name for s in specs] + [n for n, _ in extra]
        touched = 0
        for key, r in latest.items():
            row = {n: r.get(n) for n in names}
            row[SYNCED_AT] = "now"
            if key in index:
                target[index[key]].update(row)
            else:
                target.append({**{c: None for c in self.schemas[table]}, **row})
            touched += 1
        if delete_scope:
            if delete_scope != "TRUE":
                raise NotImplementedError("the fake deletes only with scope TRUE")
            keep = [r for r in target if tuple(r[k] for k in primary_key) in latest]
            touched += len(target) - len(keep)
            self.tables[table] = keep
        return MergeStats(rows_staged=len(staged), dml_rows=touched,
                          bytes_staged=sum(f.stat().st_size for f in files))

    def replace(self, table, files, specs, run_id="") -> MergeStats:
        self._job("replace", table)
        staged = self._staged(files)
        names = [s.bq_name for s in specs]
        self.tables[table] = [{**{n: r.get(n) for n in names}, SYNCED_AT: "now"} for r in staged]
        return MergeStats(rows_staged=len(staged), dml_rows=len(staged))

    def swap_in(self, table, shadow, cluster, descriptions) -> None:
        self._job("swap_in", table)
        self.schemas[table] = dict(self.schemas[shadow])
        self.tables[table] = [dict(r) for r in self.tables[shadow]]
        self.describe_columns(table, descriptions)

    # -- state ----------------------------------------------------------------------------

    def read_watermark(self, table: str) -> Watermark | None:
        if table not in self.state:
            return None
        text, version = self.state[table]
        return Watermark.from_json(text, version)

    def write_watermark(self, table, wm, previous, run_id) -> Watermark:
        self._job("write_watermark", table)
        now = self.state.get(table)
        if (previous is None) != (now is None) or (now and now[1] != previous.version):
            raise LoadError("the watermark was moved by another run meanwhile", table=table)
        version = 1 if previous is None else previous.version + 1
        self.state[table] = (wm.to_json(), version)
        return Watermark(wm.key, version, wm.rows_total, wm.columns)

    def clear_watermark(self, table: str) -> None:
        self.state.pop(table, None)

    def read_note(self, table: str) -> dict | None:
        note = self.notes.get(table)
        return json.loads(json.dumps(note)) if note is not None else None

    def write_note(self, table: str, note: dict, run_id: str) -> None:
        self.notes[table] = json.loads(json.dumps(note, sort_keys=True))
