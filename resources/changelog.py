"""The BigQuery side of realtime delivery (issue #15): change logs, their merge, the live view,
the realtime state and the cluster checkpoints — in the customer's own dataset.

Within BigQuery's real limits (docs/realtime.md, docs/bigquery-limits.md):
- Rows reach BigQuery by the legacy streaming API (tabledata.insertAll, `insert_rows`): no
  job, so no table write of the 1,500 a day and no DML slot. Those rows cannot be touched by
  DML for ~30 minutes ("Rows that were recently written using the tabledata.insertall streaming
  method can't be modified with … UPDATE, DELETE, MERGE, or TRUNCATE statements", BigQuery DML
  docs), so nothing here ever runs DML on a change log: it is only read, and it cleans itself
  by partition expiration on `_hakobu_committed_at`.
- The customer's table takes one MERGE per `merge_every_minutes` (>= 10: at most 144 a day);
  the state rows of all of a tenant's tables move in one MERGE per round, by compare-and-set.
- The cluster checkpoint is appended by insertAll to `_hakobu_rt_checkpoint` (no DML per
  flush); the latest row is the checkpoint.
"""

from __future__ import annotations

import datetime as dt

from google.cloud import bigquery

from hakobu.bqschema import STATE_TABLE, SYNCED_AT, BqType
from hakobu.errors import LoadError
from hakobu.naming import change_log, live_view
from hakobu.realtime import (CHECKPOINT_TABLE, COMMITTED_AT, DELETE, GEN, IDX, OP, SEQ,
                             STATE_SUFFIX, UPSERT, RealtimeState)
from hakobu.sqlquote import bq_string, quote_bq
from hakobu.types import ColumnSpec
from resources.bigquery_dest import BigQueryDestination

ROWS_PER_REQUEST = 500             # BigQuery's advice for one insertAll request
RETENTION_DAYS = 7                 # change-log and checkpoint partitions expire after this


class RealtimeDataset:
    """The realtime tables of one customer dataset (wraps its BigQueryDestination)."""

    def __init__(self, dest: BigQueryDestination, retention_days: int = RETENTION_DAYS):
        self.dest = dest
        self.retention_days = retention_days
        self._schemas: dict[str, list] = {}

    # -- tables ---------------------------------------------------------------------------

    def _log_columns(self, specs: list[ColumnSpec]) -> list[tuple[str, str]]:
        return [(s.bq_name, s.staging_bq_type) for s in specs] + [
            (OP, "STRING"), (SEQ, "INT64"), (IDX, "INT64"), (GEN, "INT64"),
            (COMMITTED_AT, "TIMESTAMP")]

    def ensure_change_log(self, bq_table: str, specs: list[ColumnSpec], *,
                          replace: bool = False) -> bool:
        """`_hakobu_cl_<table>`: the table's columns in their staging types (JSON as STRING,
        as in staging), then op, order, generation and commit time; one partition per commit
        day, expiring after retention_days. Created by DDL: parameterised NUMERIC holds.

        Returns whether the existing log has these columns (True for a new one). A log of
        other columns (the source table's shape changed) is left as it is — its unmerged rows
        are the current generation's — unless `replace`: for a new generation, whose rows
        start after its snapshot, it is made again with these columns."""
        name, cols = change_log(bq_table), self._log_columns(specs)
        live = self.dest.columns(name)
        if live is not None:
            want = {n.lower(): BqType.parse(t) for n, t in cols}
            if live.keys() == want.keys() and all(_same(live[k].type, t)
                                                  for k, t in want.items()):
                return True
            if not replace:
                return False
            self.dest.drop_table(name)
            self._schemas.pop(name, None)
        self.dest.sql(f"CREATE TABLE IF NOT EXISTS {self.dest.ref(name)} ("
                      + ", ".join(f"{quote_bq(n)} {t}" for n, t in cols)
                      + f") PARTITION BY DATE({quote_bq(COMMITTED_AT)}) OPTIONS("
                        f"partition_expiration_days={int(self.retention_days)})", table=name)
        return True

    def ensure_checkpoints(self) -> None:
        self.dest.sql(f"CREATE TABLE IF NOT EXISTS {self.dest.ref(CHECKPOINT_TABLE)} ("
                      "cluster STRING, checkpoint STRING, seq INT64, recorded_at TIMESTAMP) "
                      "PARTITION BY DATE(recorded_at) OPTIONS(partition_expiration_days="
                      f"{int(self.retention_days)})", table=CHECKPOINT_TABLE)

    def create_live_view(self, bq_table: str, specs: list[ColumnSpec], key: list[str],
                         gen: int) -> str:
        """`<table>_live`: the table overlaid by the changes not merged yet (seq above the
        state row's `merged`), the latest per key; a delete hides the row. DDL, not a write."""
        name, cl = live_view(bq_table), change_log(bq_table)
        cols = [s.bq_name for s in specs]
        json_cols = {s.bq_name for s in specs if s.bq_type == "JSON"}
        merged = (f"SELECT CAST(JSON_VALUE(watermark, '$.merged') AS INT64) FROM "
                  f"{self.dest.ref(STATE_TABLE)} WHERE table_name = "
                  f"{bq_string(bq_table + STATE_SUFFIX)}")
        latest = self._latest(cl, key, f"{quote_bq(GEN)} = {int(gen)} AND {quote_bq(SEQ)} > "
                                       f"COALESCE(({merged}), -1)")
        on = " AND ".join(f"C.{quote_bq(k)} = T.{quote_bq(k)}" for k in key)
        shown = ", ".join(f"PARSE_JSON(C.{quote_bq(c)}) AS {quote_bq(c)}" if c in json_cols
                          else f"C.{quote_bq(c)}" for c in cols)
        self.dest.sql(
            f"CREATE OR REPLACE VIEW {self.dest.ref(name)} AS WITH C AS ({latest}) "
            f"SELECT {', '.join(f'T.{quote_bq(c)}' for c in cols)} FROM "
            f"{self.dest.ref(bq_table)} T LEFT JOIN C ON {on} WHERE C.{quote_bq(key[0])} IS NULL "
            f"UNION ALL SELECT {shown} FROM C WHERE C.{quote_bq(OP)} = '{UPSERT}'", table=name)
        return name

    def _latest(self, cl: str, key: list[str], where: str) -> str:
        """The latest change per key among the change-log rows `where` picks; a change read
        twice (a replay) has the same (seq, idx) and the same row: either copy is the one."""
        part = ", ".join(quote_bq(k) for k in key)
        return (f"SELECT * EXCEPT(_hakobu_rn) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
                f"{part} ORDER BY {quote_bq(SEQ)} DESC, {quote_bq(IDX)} DESC) AS _hakobu_rn "
                f"FROM {self.dest.ref(cl)} WHERE {where}) WHERE _hakobu_rn = 1")

    # -- appending (insertAll: no job) ----------------------------------------------------

    def append(self, table: str, rows: list[dict], row_ids: list[str]) -> int:
        """Stream rows into a change log or the checkpoint table. Every row carries an insert
        id (BigQuery's best-effort dedupe; the merge dedupes by seq in any case). A refused row
        fails the whole flush: the checkpoint then does not move, and a rerun sends it again."""
        schema = self._schema(table)
        for i in range(0, len(rows), ROWS_PER_REQUEST):
            with self.dest._errors("streaming insert", table):
                errors = self.dest.client.insert_rows(
                    bigquery.Table(self.dest.table_id(table), schema=schema),
                    rows[i:i + ROWS_PER_REQUEST], row_ids=row_ids[i:i + ROWS_PER_REQUEST],
                    retry=self.dest.retry)
            if errors:
                raise LoadError(f"BigQuery refused {len(errors)} streamed row(s) of {table} in "
                                f"{self.dest.project}.{self.dest.dataset}: {str(errors)[:300]}",
                                table=table, hint="the checkpoint did not move; fix the cause "
                                                  "and rerun `hakobu stream`")
        return len(rows)

    def _schema(self, table: str) -> list:
        if table not in self._schemas:
            with self.dest._errors("reading table", table):
                self._schemas[table] = self.dest.client.get_table(
                    self.dest.table_id(table), retry=self.dest.retry).schema
        return self._schemas[table]

    def record_checkpoint(self, cluster: str, checkpoint: str, seq: int) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.append(CHECKPOINT_TABLE, [{"cluster": cluster, "checkpoint": checkpoint,
                                        "seq": seq, "recorded_at": now}],
                    [f"{cluster}:{seq}:{now.timestamp()}"])

    def latest_checkpoint(self, cluster: str) -> str | None:
        rows = self.dest.rows(f"SELECT checkpoint FROM {self.dest.ref(CHECKPOINT_TABLE)} "
                              "WHERE cluster = @c ORDER BY recorded_at DESC, seq DESC LIMIT 1",
                              [bigquery.ScalarQueryParameter("c", "STRING", cluster)])
        return rows[0]["checkpoint"] if rows else None

    def lag_facts(self, bq_table: str, cluster: str) -> dict:
        """What the `realtime_lag` check judges, in one query: the table's state row, the
        tenant's newest checkpoint time, the newest change's commit time, and the changes not
        merged yet (count, oldest commit time) of the current generation."""
        facts = {"state": None, "checkpoint_at": None, "acked_at": None,
                 "newest_change_at": None, "unmerged": 0, "oldest_unmerged_at": None}
        if self.dest.table_schema(STATE_TABLE) is None:      # no dataset or never streamed
            return facts
        state = facts["state"] = self.read_states([bq_table]).get(bq_table)
        if state is None:
            return facts
        cl, seq, at = self.dest.ref(change_log(bq_table)), quote_bq(SEQ), quote_bq(COMMITTED_AT)
        mine = f"{quote_bq(GEN)} = @g"
        [row] = self.dest.rows(
            f"SELECT (SELECT MAX(recorded_at) FROM {self.dest.ref(CHECKPOINT_TABLE)} WHERE "
            f"cluster = @c) AS checkpoint_at, (SELECT JSON_VALUE(checkpoint, '$.acked_at') "
            f"FROM {self.dest.ref(CHECKPOINT_TABLE)} WHERE cluster = @c ORDER BY recorded_at "
            f"DESC, seq DESC LIMIT 1) AS acked_at, (SELECT MAX({at}) FROM {cl} WHERE {mine}) AS "
            f"newest_change_at, (SELECT COUNT(*) FROM {cl} WHERE {mine} AND {seq} > @m) AS "
            f"unmerged, (SELECT MIN({at}) FROM {cl} WHERE {mine} AND {seq} > @m) AS "
            "oldest_unmerged_at",
            [bigquery.ScalarQueryParameter("c", "STRING", cluster),
             bigquery.ScalarQueryParameter("g", "INT64", state.gen),
             bigquery.ScalarQueryParameter("m", "INT64", state.merged)])
        facts.update({k: row[k] for k in ("checkpoint_at", "newest_change_at",
                                          "oldest_unmerged_at")}, unmerged=int(row["unmerged"]),
                     acked_at=dt.datetime.fromisoformat(row["acked_at"]) if row["acked_at"]
                     else None)
        return facts

    # -- merging --------------------------------------------------------------------------

    # long: one MERGE statement built in one piece
    def merge(self, bq_table: str, specs: list[ColumnSpec], key: list[str], gen: int,
              after: int, upto: int, *, version: int | None = None) -> int:
        """Apply the latest change per key with seq in (after, upto]: a delete deletes, an
        upsert updates or inserts. Idempotent: a rerun over the same range (a crash before the
        state moved) writes the same rows again. Returns the rows affected.

        `version`: apply nothing unless the table's state row is still at that version — the
        stream's merge rounds pass it, so a process whose state was moved meanwhile (a
        `--recover` started a new generation and snapshotted the table again) cannot write its
        older rows over the new snapshot; its compare-and-set then fails by name. (The check
        is in the same statement: only a MERGE already running when the state moved can
        still land, a window of one statement.)"""
        cl = change_log(bq_table)
        names = [s.bq_name for s in specs]
        json_cols = {s.bq_name for s in specs if s.bq_type == "JSON"}

        def val(n: str) -> str:
            return f"PARSE_JSON(S.{quote_bq(n)})" if n in json_cols else f"S.{quote_bq(n)}"

        where = f"{quote_bq(GEN)} = @g AND {quote_bq(SEQ)} > @a AND {quote_bq(SEQ)} <= @u"
        params = [bigquery.ScalarQueryParameter("g", "INT64", gen),
                  bigquery.ScalarQueryParameter("a", "INT64", after),
                  bigquery.ScalarQueryParameter("u", "INT64", upto)]
        if version is not None:
            where += (f" AND EXISTS (SELECT 1 FROM {self.dest.ref(STATE_TABLE)} WHERE "
                      "table_name = @st AND version = @v)")
            params += [bigquery.ScalarQueryParameter("st", "STRING", bq_table + STATE_SUFFIX),
                       bigquery.ScalarQueryParameter("v", "INT64", version)]
        latest = self._latest(cl, key, where)
        on = " AND ".join(f"T.{quote_bq(k)} = S.{quote_bq(k)}" for k in key)
        sets = ", ".join([f"{quote_bq(n)} = {val(n)}" for n in names if n not in key]
                         + [f"{quote_bq(SYNCED_AT)} = CURRENT_TIMESTAMP()"])
        ins = ", ".join([quote_bq(n) for n in names] + [quote_bq(SYNCED_AT)])
        vals = ", ".join([val(n) for n in names] + ["CURRENT_TIMESTAMP()"])
        job = self.dest.sql(
            f"MERGE {self.dest.ref(bq_table)} T USING ({latest}) S ON {on} "
            f"WHEN MATCHED AND S.{quote_bq(OP)} = '{DELETE}' THEN DELETE "
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED AND S.{quote_bq(OP)} = '{UPSERT}' THEN INSERT ({ins}) "
            f"VALUES ({vals})", params, table=bq_table)
        return job.num_dml_affected_rows or 0

    # -- state ----------------------------------------------------------------------------

    def read_states(self, bq_tables: list[str]) -> dict[str, RealtimeState]:
        """The realtime state rows of these tables (absent: never snapshotted), one query."""
        names = [t + STATE_SUFFIX for t in bq_tables]
        rows = self.dest.rows(f"SELECT table_name, watermark, version FROM "
                              f"{self.dest.ref(STATE_TABLE)} WHERE table_name IN UNNEST(@ts)",
                              [bigquery.ArrayQueryParameter("ts", "STRING", names)])
        return {r["table_name"][:-len(STATE_SUFFIX)]:
                RealtimeState.from_json(r["watermark"], int(r["version"])) for r in rows}

    # long: one compare-and-set MERGE for many rows, as resources.bigquery_state.flush_state
    def write_states(self, states: dict[str, RealtimeState], run_id: str
                     ) -> dict[str, RealtimeState]:
        """Move several tables' state rows in one MERGE, each only from the version it was
        read at (version 0: the row must not exist yet). A row moved meanwhile (a second
        `hakobu stream` for the tenant, a recover) fails the round by name."""
        if not states:
            return {}
        params, rows = [], []
        for i, (t, s) in enumerate(sorted(states.items())):
            params += [bigquery.ScalarQueryParameter(f"t{i}", "STRING", t + STATE_SUFFIX),
                       bigquery.ScalarQueryParameter(f"w{i}", "STRING", s.to_json()),
                       bigquery.ScalarQueryParameter(f"v{i}", "INT64", s.version),
                       bigquery.ScalarQueryParameter(f"r{i}", "STRING", run_id)]
            rows.append(f"SELECT @t{i} AS table_name, @w{i} AS w, @v{i} AS v, @r{i} AS r")
        job = self.dest.sql(
            f"MERGE {self.dest.ref(STATE_TABLE)} T USING ({' UNION ALL '.join(rows)}) S "
            "ON T.table_name = S.table_name "
            "WHEN MATCHED AND T.version = S.v THEN UPDATE SET watermark = S.w, "
            "version = T.version + 1, updated_at = CURRENT_TIMESTAMP(), run_id = S.r "
            "WHEN NOT MATCHED AND S.v = 0 THEN INSERT (table_name, watermark, version, "
            "updated_at, run_id) VALUES (S.table_name, S.w, 1, CURRENT_TIMESTAMP(), S.r)",
            params, table=STATE_TABLE)
        if (job.num_dml_affected_rows or 0) != len(rows):
            found = self.read_states(list(states))
            lost = sorted(t for t, s in states.items()
                          if t not in found or found[t].version != s.version + 1)
            raise LoadError("the realtime state was moved by another process meanwhile",
                            table=", ".join(lost or sorted(states)),
                            hint="run one `hakobu stream` per cluster; rerun it — the merged "
                                 "rows are kept, the merge repeats idempotently")
        return {t: RealtimeState(s.phase, s.start, s.gen, s.merged, s.version + 1)
                for t, s in states.items()}


def _same(live: BqType, want: BqType) -> bool:
    """A live column of the planned type. A decimal reported without parameters (the
    emulator's tables.get never gives them, nor BIGNUMERIC; real BigQuery always does for a
    parameterised column) is taken for the planned decimal."""
    if live == want:
        return True
    return live.decimal and want.decimal and live.precision is None
