"""The state table of a BigQuery dataset: watermarks (moved by compare-and-set) and the
content-verification notes, one row per table in `_hakobu_state` (the warehouse: one state
table per tenant, see resources.warehouse_dest).

A mixin of resources.bigquery_dest.BigQueryDestination, kept apart for size: it uses the
destination's `client`, `retry`, `ref`, `table_id`, `sql`, `rows`, `_errors` and its
`_prefetched` / `_notes` caches.
"""

import json

from google.cloud import bigquery

from hakobu.bqschema import KEYS_SUFFIX, NOTE_SUFFIX, STATE_TABLE
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
        names = list(tables) + [t + sfx for t in tables for sfx in (NOTE_SUFFIX, KEYS_SUFFIX)]
        rows = self.rows(f"SELECT table_name, watermark, version FROM {self.ref(STATE_TABLE)} "
                         "WHERE table_name IN UNNEST(@ts)",
                         [bigquery.ArrayQueryParameter("ts", "STRING", names)])
        found = {r["table_name"]: r for r in rows}
        self._prefetched = {t: Watermark.from_json(found[t]["watermark"],
                                                   int(found[t]["version"]))
                            if t in found else None for t in tables}
        self._notes = {t: json.loads(found[t + NOTE_SUFFIX]["watermark"])
                       if t + NOTE_SUFFIX in found else None for t in tables}
        self._key_memos = {t: json.loads(found[t + KEYS_SUFFIX]["watermark"])
                           if t + KEYS_SUFFIX in found else None for t in tables}

    def read_key_stats(self, table: str) -> dict | None:
        """The key stats remembered for a table's checksum buckets (hakobu.checksums), if any."""
        memos = getattr(self, "_key_memos", {})
        if table in memos:
            return memos.pop(table)
        rows = self.rows(f"SELECT watermark FROM {self.ref(STATE_TABLE)} WHERE table_name = @t",
                         [bigquery.ScalarQueryParameter("t", "STRING", table + KEYS_SUFFIX)])
        return json.loads(rows[0]["watermark"]) if rows else None

    def write_key_stats(self, table: str, memo: dict, run_id: str) -> None:
        """Remember them (an upsert, held like the notes until flush_state)."""
        self._hold_row(table + KEYS_SUFFIX, memo, run_id)

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
        self._hold_row(table + NOTE_SUFFIX, note, run_id)

    def _hold_row(self, name: str, value: dict, run_id: str) -> None:
        held = getattr(self, "_held_notes", None)
        if held is not None:
            held[name] = (value, run_id)
            return
        self._write_notes({name: (value, run_id)})

    def hold_notes(self) -> None:
        """Keep the notes written from now on until flush_notes: one MERGE for all of a run's
        tables instead of one job per table (a crash before the flush loses only tonight's
        rotation step: the next night checks the same slice again)."""
        self._held_notes = {}

    def flush_notes(self) -> int:
        """Write what is held (notes, and watermark moves after hold_watermarks): flush_state."""
        return self.flush_state()

    def _write_notes(self, notes: dict) -> None:
        self._merge_state(notes, {})

    def read_watermark(self, table: str) -> Watermark | None:
        held = getattr(self, "_held_marks", None) or {}
        if table in held:                     # this run moved it; not written yet
            return held[table][1]
        if table in self._prefetched:
            return self._prefetched.pop(table)
        rows = self.rows(f"SELECT watermark, version FROM {self.ref(STATE_TABLE)} "
                         "WHERE table_name = @t", [bigquery.ScalarQueryParameter("t", "STRING",
                                                                                 table)])
        if not rows:
            return None
        return Watermark.from_json(rows[0]["watermark"], int(rows[0]["version"]))

    def hold_watermarks(self) -> None:
        """Keep each table's first watermark move of this run in memory until flush_state: a
        run's moves, and its notes, then go in one MERGE instead of one job per table (on
        BigQuery a job costs about a second, and every DML statement on the state table waits
        for the per-table DML slots). Safe for the same reason the per-table order is: a move
        is held only after the MERGE it covers succeeded, so a crash before the flush makes the
        next run read those rows again and merge them idempotently. A table that moves a second
        time in the run (a large first load, merged every MERGE_EVERY_ROWS) writes from then
        on at once, so a crash loses at most its last step, as before."""
        self._held_marks: dict[str, tuple[Watermark | None, Watermark, str]] = {}
        self.hold_notes()

    def write_watermark(self, table: str, wm: Watermark, previous: Watermark | None,
                        run_id: str) -> Watermark:
        """Compare-and-set: succeeds only if nobody moved the watermark since `previous`.
        Held (see hold_watermarks) for a table's first move in a run."""
        held = getattr(self, "_held_marks", None)
        if held is not None:
            if table not in held and table not in getattr(self, "_moved_once", set()):
                new = Watermark(wm.key, (previous.version if previous else 0) + 1,
                                wm.rows_total, wm.columns)
                held[table] = (previous, new, run_id)
                return new
            if table in held:
                previous = held.pop(table)[0]     # the stored version is still the base
            self._moved_once = getattr(self, "_moved_once", set()) | {table}
        return self._cas(table, wm, previous, run_id)

    def _cas(self, table: str, wm: Watermark, previous: Watermark | None,
             run_id: str) -> Watermark:
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
            raise _moved_meanwhile([table])
        return Watermark(wm.key, version, wm.rows_total, wm.columns)

    def flush_state(self) -> int:
        """Write the held watermark moves (each a compare-and-set on its version) and the held
        notes in one MERGE; then nothing is held any more. Returns the rows written. A move
        whose base version is gone (another run moved it, or a backfill cleared it) fails the
        run by name; the others are written."""
        marks, self._held_marks = getattr(self, "_held_marks", None) or {}, None
        notes, self._held_notes = getattr(self, "_held_notes", None) or {}, None
        self._moved_once = set()
        if not marks and not notes:
            return 0
        return self._merge_state(notes, marks)

    def _merge_state(self, notes: dict, marks: dict) -> int:
        """Notes {table: (note, run_id)} upserted and watermark moves {table: (previous, new,
        run_id)} compare-and-set, in one MERGE (flush_state; a note alone: _write_notes)."""
        params, rows = [], []
        for i, (name, value, base, run_id) in enumerate(
                [(t, json.dumps(n, sort_keys=True), None, r)
                 for t, (n, r) in sorted(notes.items())]
                + [(t, new.to_json(), prev.version if prev else 0, r)
                   for t, (prev, new, r) in sorted(marks.items())]):
            params += [bigquery.ScalarQueryParameter(f"t{i}", "STRING", name),
                       bigquery.ScalarQueryParameter(f"w{i}", "STRING", value),
                       bigquery.ScalarQueryParameter(f"r{i}", "STRING", run_id),
                       bigquery.ScalarQueryParameter(f"v{i}", "INT64", base)]
            rows.append(f"SELECT @t{i} AS table_name, @w{i} AS w, @r{i} AS r, @v{i} AS v")
        # v NULL: a note (plain upsert, version stays 0); v 0: a first watermark (insert only
        # if absent); v n: moves only a row still at version n.
        job = self.sql(
            f"MERGE {self.ref(STATE_TABLE)} T USING ({' UNION ALL '.join(rows)}) S "
            "ON T.table_name = S.table_name "
            "WHEN MATCHED AND (S.v IS NULL OR T.version = S.v) THEN UPDATE SET "
            "watermark = S.w, version = IF(S.v IS NULL, T.version, T.version + 1), "
            "updated_at = CURRENT_TIMESTAMP(), run_id = S.r "
            "WHEN NOT MATCHED AND (S.v IS NULL OR S.v = 0) THEN INSERT (table_name, watermark, "
            "version, updated_at, run_id) VALUES (S.table_name, S.w, IF(S.v IS NULL, 0, 1), "
            "CURRENT_TIMESTAMP(), S.r)", params, table=next(iter(sorted(marks or notes))))
        if (job.num_dml_affected_rows or 0) != len(rows):
            found = {r["table_name"]: (int(r["version"]), r["run_id"]) for r in self.rows(
                f"SELECT table_name, version, run_id FROM {self.ref(STATE_TABLE)} "
                "WHERE table_name IN UNNEST(@ts)",
                [bigquery.ArrayQueryParameter("ts", "STRING", sorted(marks))])}
            lost = [t for t, (_, new, r) in sorted(marks.items())
                    if found.get(t) != (new.version, r)]
            raise _moved_meanwhile(lost or sorted(marks))
        return len(rows)

    def clear_watermark(self, table: str) -> None:
        (getattr(self, "_held_marks", None) or {}).pop(table, None)
        self.sql(f"DELETE FROM {self.ref(STATE_TABLE)} WHERE table_name = @t",
                 [bigquery.ScalarQueryParameter("t", "STRING", table)], table=table)
        self._prefetched[table] = None      # this run's read_watermark sees it gone


def _moved_meanwhile(tables: list[str]) -> LoadError:
    return LoadError("the watermark was moved by another run meanwhile",
                     table=", ".join(tables),
                     hint="only one run per tenant may load at a time; rerun — the data "
                          "already merged is kept")
