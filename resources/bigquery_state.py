"""The state table of a BigQuery dataset: watermarks (moved by compare-and-set) and the
content-verification notes, one row per table in `_hakobu_state` (the warehouse: one state
table per tenant, see resources.warehouse_dest).

A mixin of resources.bigquery_dest.BigQueryDestination, kept apart for size: it uses the
destination's `client`, `retry`, `ref`, `table_id`, `sql`, `rows`, `_errors` and its
`_prefetched` / `_notes` caches.
"""

import json

from google.cloud import bigquery

from hakobu.bqschema import NOTE_SUFFIX, STATE_TABLE
from hakobu.errors import LoadError
from hakobu.state import Watermark


class StateTable:
    """Watermarks and notes of the tables of one dataset (mixed into BigQueryDestination)."""

    def ensure_state_table(self) -> None:
        """The watermark table, created by the API if missing (no query job)."""
        schema = [bigquery.SchemaField(n, t) for n, t in (
            ("table_name", "STRING"), ("watermark", "STRING"), ("version", "INTEGER"),
            ("updated_at", "TIMESTAMP"), ("run_id", "STRING"))]
        with self._errors("creating the state table"):
            self.client.create_table(bigquery.Table(self.table_id(STATE_TABLE), schema=schema),
                                     exists_ok=True, retry=self.retry)

    def prefetch_watermarks(self, tables: list[str]) -> None:
        """Read the watermarks of all `tables` in one query: each table's first read_watermark
        in this run takes its value from here (later ones, e.g. a retry, read again)."""
        names = list(tables) + [t + NOTE_SUFFIX for t in tables]
        rows = self.rows(f"SELECT table_name, watermark, version FROM {self.ref(STATE_TABLE)} "
                         "WHERE table_name IN UNNEST(@ts)",
                         [bigquery.ArrayQueryParameter("ts", "STRING", names)])
        found = {r["table_name"]: r for r in rows}
        self._prefetched = {t: Watermark.from_json(found[t]["watermark"],
                                                   int(found[t]["version"]))
                            if t in found else None for t in tables}
        self._notes = {t: json.loads(found[t + NOTE_SUFFIX]["watermark"])
                       if t + NOTE_SUFFIX in found else None for t in tables}

    def read_note(self, table: str) -> dict | None:
        """The content-verification note of a table (hakobu.verify.VerifyNote), if any."""
        if table in self._notes:
            return self._notes.pop(table)
        rows = self.rows(f"SELECT watermark FROM {self.ref(STATE_TABLE)} WHERE table_name = @t",
                         [bigquery.ScalarQueryParameter("t", "STRING", table + NOTE_SUFFIX)])
        return json.loads(rows[0]["watermark"]) if rows else None

    def write_note(self, table: str, note: dict, run_id: str) -> None:
        """Upsert the note: it only ever moves forward with the nights, and two runs of one
        tenant never overlap, so it needs no compare-and-set. Held until flush_notes after
        hold_notes (a run's notes in one statement)."""
        held = getattr(self, "_held_notes", None)
        if held is not None:
            held[table] = (note, run_id)
            return
        self._write_notes({table: (note, run_id)})

    def hold_notes(self) -> None:
        """Keep the notes written from now on until flush_notes: one MERGE for all of a run's
        tables instead of one job per table (a crash before the flush loses only tonight's
        rotation step: the next night checks the same slice again)."""
        self._held_notes = {}

    def flush_notes(self) -> int:
        held, self._held_notes = getattr(self, "_held_notes", None), None
        if held:
            self._write_notes(held)
        return len(held or ())

    def _write_notes(self, notes: dict) -> None:
        params, rows = [], []
        for i, (table, (note, run_id)) in enumerate(sorted(notes.items())):
            params += [bigquery.ScalarQueryParameter(f"t{i}", "STRING", table + NOTE_SUFFIX),
                       bigquery.ScalarQueryParameter(f"w{i}", "STRING",
                                                     json.dumps(note, sort_keys=True)),
                       bigquery.ScalarQueryParameter(f"r{i}", "STRING", run_id)]
            rows.append(f"SELECT @t{i} AS table_name, @w{i} AS w, @r{i} AS r")
        self.sql(f"MERGE {self.ref(STATE_TABLE)} T USING ({' UNION ALL '.join(rows)}) S "
                 "ON T.table_name = S.table_name "
                 "WHEN MATCHED THEN UPDATE SET watermark = S.w, updated_at = CURRENT_TIMESTAMP(), "
                 "run_id = S.r WHEN NOT MATCHED THEN INSERT (table_name, watermark, version, "
                 "updated_at, run_id) VALUES (S.table_name, S.w, 0, CURRENT_TIMESTAMP(), S.r)",
                 params, table=next(iter(notes)))

    def read_watermark(self, table: str) -> Watermark | None:
        if table in self._prefetched:
            return self._prefetched.pop(table)
        rows = self.rows(f"SELECT watermark, version FROM {self.ref(STATE_TABLE)} "
                         "WHERE table_name = @t", [bigquery.ScalarQueryParameter("t", "STRING",
                                                                                 table)])
        if not rows:
            return None
        return Watermark.from_json(rows[0]["watermark"], int(rows[0]["version"]))

    def write_watermark(self, table: str, wm: Watermark, previous: Watermark | None,
                        run_id: str) -> Watermark:
        """Compare-and-set: succeeds only if nobody moved the watermark since `previous`."""
        p = [bigquery.ScalarQueryParameter("t", "STRING", table),
             bigquery.ScalarQueryParameter("w", "STRING", wm.to_json()),
             bigquery.ScalarQueryParameter("r", "STRING", run_id)]
        if previous is None:
            job = self.sql(f"INSERT INTO {self.ref(STATE_TABLE)} (table_name, watermark, version, "
                           "updated_at, run_id) SELECT @t, @w, 1, CURRENT_TIMESTAMP(), @r "
                           f"FROM (SELECT 1) WHERE NOT EXISTS (SELECT 1 FROM "
                           f"{self.ref(STATE_TABLE)} WHERE table_name = @t)", p, table=table)
            version = 1
        else:
            p.append(bigquery.ScalarQueryParameter("v", "INT64", previous.version))
            job = self.sql(f"UPDATE {self.ref(STATE_TABLE)} SET watermark = @w, "
                           "version = version + 1, updated_at = CURRENT_TIMESTAMP(), run_id = @r "
                           "WHERE table_name = @t AND version = @v", p, table=table)
            version = previous.version + 1
        if (job.num_dml_affected_rows or 0) != 1:
            raise LoadError("the watermark was moved by another run meanwhile",
                            table=table, hint="only one run per tenant may load at a time; "
                                              "rerun — the data already merged is kept")
        return Watermark(wm.key, version, wm.rows_total, wm.columns)

    def clear_watermark(self, table: str) -> None:
        self.sql(f"DELETE FROM {self.ref(STATE_TABLE)} WHERE table_name = @t",
                 [bigquery.ScalarQueryParameter("t", "STRING", table)], table=table)
        self._prefetched[table] = None      # this run's read_watermark sees it gone
