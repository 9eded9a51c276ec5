"""The strict BigQuery layer (hakobu/localenv/strict_bq.py) through the real google-cloud-bigquery
client: per-table mutating-DML concurrency and queue, INSERT DML past its daily free count, table
writes per day, the per-project query queue, the job latency, the counters — each failing the way
BigQuery fails (reason, message, HTTP code), with small limits so the tests stay fast.

Not wired into the rest of the suite (its latency would slow it); emulator <- tests/bq_live.py <-
this layer <- client, as the suite would chain it."""

import io
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from hakobu.localenv.strict_bq import StrictLimits, classify, start_strict
from resources.bigquery_client import BigQuerySettings, make_client

P = "hakobu-test"


@pytest.fixture
def strict(bq_live):
    """A factory: strict(StrictLimits(...)) -> a layer in front of the live-schema proxy."""
    layers = []

    def make(limits: StrictLimits):
        layer = start_strict(bq_live.url, limits)
        layers.append(layer)
        return layer
    yield make
    for layer in layers:
        layer.stop()


@pytest.fixture
def ds(bq_live):
    """A dataset with one table t(id, v), made straight on the live proxy (not counted)."""
    name = f"strict_{uuid.uuid4().hex[:8]}"
    c = make_client(BigQuerySettings(endpoint=bq_live.url, retry_deadline_s=10.0), project=P)
    c.create_dataset(name)
    c.query(f"CREATE TABLE `{P}.{name}.t` (id INT64, v STRING)").result()
    yield name
    c.delete_dataset(name, delete_contents=True, not_found_ok=True)


def client(layer) -> bigquery.Client:
    return make_client(BigQuerySettings(endpoint=layer.url, retry_deadline_s=10.0), project=P)


def merge(ds: str, i: int) -> str:
    return (f"MERGE `{P}.{ds}.t` T USING (SELECT {i} AS id, 'v{i}' AS v) S ON T.id = S.id "
            "WHEN MATCHED THEN UPDATE SET v = S.v "
            "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (S.id, S.v)")


def count(layer, ds: str) -> int:
    return list(client(layer).query(f"SELECT COUNT(*) n FROM `{P}.{ds}.t`").result())[0]["n"]


def parquet(rows: int, start: int = 0) -> io.BytesIO:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(range(start, start + rows), pa.int64()),
                             "v": pa.array([f"r{i}" for i in range(rows)])}), buf)
    buf.seek(0)
    return buf


def load(c: bigquery.Client, ds: str, data: io.BytesIO) -> bigquery.LoadJob:
    job = c.load_table_from_file(data, f"{P}.{ds}.t", job_config=bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND))
    job.result()
    return job


# -- mutating DML per table ------------------------------------------------------------------

def test_three_merges_on_one_table_two_run_one_queues(strict, ds):
    layer = strict(StrictLimits(job_latency_s=0.4))
    c = client(layer)
    t0 = time.monotonic()
    jobs = [c.query(merge(ds, i), job_retry=None) for i in range(3)]
    assert [j.state for j in jobs] == ["RUNNING", "RUNNING", "PENDING"]   # as jobs.insert says
    for j in jobs:
        j.result()
    elapsed = time.monotonic() - t0
    table = layer.stats()["tables"][f"{P}.{ds}.t"]
    assert table["peak_dml_running"] == 2 and table["peak_dml_queued"] == 1
    assert table["mutating_dml"] == 3 and table["dml_statements"] == 3
    assert elapsed >= 2 * 0.4                     # the third waited for a slot
    assert count(layer, ds) == 3


def test_with_no_queue_the_third_merge_fails_as_bigquery_fails_it(strict, ds):
    layer = strict(StrictLimits(job_latency_s=0.4, mutating_dml_queued=0))
    c = client(layer)
    jobs = [c.query(merge(ds, i), job_retry=None) for i in range(3)]
    with pytest.raises(gexc.BadRequest) as err:
        jobs[2].result()
    assert err.value.code == 400
    assert err.value.errors[0]["reason"] == "resourcesExceeded"
    assert (f"Too many DML statements outstanding against table {P}:{ds}.t, limit is 0"
            in err.value.message)
    for j in jobs[:2]:
        j.result()
    stats = layer.stats()
    assert stats["quota_errors"]["dml_outstanding"] == 1
    assert stats["tables"][f"{P}.{ds}.t"]["quota_errors"] == 1
    c.query(merge(ds, 9), job_retry=None).result()      # the slots are free again
    assert count(layer, ds) == 3


def test_the_23rd_outstanding_merge_fails_with_the_default_limits(strict, ds):
    latency = 1.0
    layer = strict(StrictLimits(job_latency_s=latency))
    c = client(layer)
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:          # submitted together, as 23 tenants would
        jobs = list(pool.map(lambda i: c.query(merge(ds, i), job_retry=None), range(23)))
    assert time.monotonic() - t0 < latency       # all 23 outstanding at once (else no test)
    failed = []
    for j in jobs:
        try:
            j.result()
        except gexc.BadRequest as exc:
            failed.append(exc)
    assert len(failed) == 1 and "limit is 20" in failed[0].message
    table = layer.stats()["tables"][f"{P}.{ds}.t"]
    assert table["peak_dml_running"] == 2 and table["peak_dml_queued"] == 20
    assert table["mutating_dml"] == 22 and table["quota_errors"] == 1


def test_insert_dml_is_limited_only_past_its_daily_free_count(strict, ds):
    layer = strict(StrictLimits(job_latency_s=0.4, mutating_dml_queued=0,
                                insert_dml_unqueued_per_day=3, insert_dml_running=1,
                                insert_dml_queued=1))
    c = client(layer)
    ins = [c.query(f"INSERT INTO `{P}.{ds}.t` (id, v) VALUES ({i}, 'x')", job_retry=None)
           for i in range(6)]
    # 3 free (run at once: not bound by the mutating limit), then 1 runs, 1 queues, 1 fails
    with pytest.raises(gexc.BadRequest, match="limit is 1"):
        ins[5].result()
    for j in ins[:5]:
        j.result()
    assert count(layer, ds) == 5
    table = layer.stats()["tables"][f"{P}.{ds}.t"]
    assert table["insert_dml"] == 5 and table["mutating_dml"] == 0
    layer.advance_day()                                  # a new day: free again
    again = [c.query(f"INSERT INTO `{P}.{ds}.t` (id, v) VALUES ({i}, 'y')", job_retry=None)
             for i in range(3)]
    for j in again:
        j.result()


# -- table writes per day ---------------------------------------------------------------------

def test_table_writes_per_day_fail_loads_count_dml_and_failed_jobs(strict, ds):
    layer = strict(StrictLimits(job_latency_s=0.05, table_writes_per_day=3))
    c = client(layer)
    key = f"{P}.{ds}.t"
    load(c, ds, parquet(2, 0))
    with pytest.raises(gexc.GoogleAPIError):               # a failed load counts too
        load(c, ds, io.BytesIO(b"not parquet at all"))
    assert layer.stats()["tables"][key]["writes_today"] == 2
    c.query(merge(ds, 100), job_retry=None).result()      # DML counts, and is not failed
    assert layer.stats()["tables"][key]["writes_today"] == 3
    with pytest.raises(gexc.Forbidden) as err:
        load(c, ds, parquet(2, 10))
    assert err.value.code == 403 and err.value.errors[0]["reason"] == "quotaExceeded"
    assert ("Quota exceeded: Your table exceeded quota for imports or query appends per table"
            in err.value.message)
    with pytest.raises(gexc.Forbidden):                    # a query job writing it: the same
        c.query(f"CREATE OR REPLACE TABLE `{P}.{ds}.t` AS SELECT 1 AS id, 'z' AS v",
                job_retry=None).result()
    c.query(merge(ds, 101), job_retry=None).result()      # DML is still not failed
    assert count(layer, ds) == 4                           # 2 loaded + 2 merged, nothing else
    stats = layer.stats()
    assert stats["quota_errors"]["table_writes"] == 2
    assert stats["tables"][key]["writes_today"] == 4 and stats["tables"][key]["writes_total"] == 4
    layer.advance_day()
    load(c, ds, parquet(1, 20))                            # the next day: allowed again
    assert layer.stats()["tables"][key]["writes_today"] == 1 and count(layer, ds) == 5


# -- query jobs per project -------------------------------------------------------------------

def test_concurrent_queries_per_project_run_queue_and_then_are_refused(strict, ds):
    layer = strict(StrictLimits(job_latency_s=0.4, project_queries_running=1,
                                project_queries_queued=1))
    c = client(layer)
    t0 = time.monotonic()
    a = c.query("SELECT 1 AS x", job_retry=None)
    b = c.query("SELECT 2 AS x", job_retry=None)
    with pytest.raises(gexc.Forbidden) as err:           # jobs.insert itself is refused
        c.query("SELECT 3 AS x", job_retry=None)
    assert err.value.code == 403 and err.value.errors[0]["reason"] == "quotaExceeded"
    assert "exceeded quota for max number of jobs that can be queued per project" in str(
        err.value)
    assert [list(j.result())[0]["x"] for j in (a, b)] == [1, 2]
    assert time.monotonic() - t0 >= 2 * 0.4               # one at a time
    stats = layer.stats()
    assert stats["peak_queries_running"] == 1 and stats["peak_queries_queued"] == 1
    assert stats["quota_errors"]["query_queue"] == 1
    # loads are not query jobs: they do not wait for the query slot
    q = c.query("SELECT 4 AS x", job_retry=None)
    lj = c.load_table_from_file(parquet(1), f"{P}.{ds}.t", job_config=bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET))
    assert q.state == "RUNNING" and lj.state == "RUNNING"    # started at once, beside q
    lj.result()
    assert list(q.result())[0]["x"] == 4


# -- latency ----------------------------------------------------------------------------------

def test_every_job_takes_the_configured_latency(strict, ds):
    slow, fast = strict(StrictLimits(job_latency_s=0.6)), strict(StrictLimits(job_latency_s=0.0))

    def timed(layer, fn):
        t0 = time.monotonic()
        fn(client(layer))
        return time.monotonic() - t0

    def q(c):
        c.query("SELECT 1", job_retry=None).result()

    def qw(c):
        list(c.query_and_wait("SELECT 1", job_retry=None))   # jobs.query, the synchronous path

    for fn in (q, qw, lambda c: load(c, ds, parquet(1))):
        # a lower bound only (a loaded machine makes both slower, never the slow one faster)
        s, _ = timed(slow, fn), timed(fast, fn)
        assert s >= 0.6, s
    assert slow.stats()["jobs"] == 3 and slow.stats()["latency_s_total"] >= 3 * 0.6
    assert StrictLimits().job_latency_s == 1.0


def test_latency_and_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("HAKOBU_STRICT_BQ_JOB_LATENCY_S", "0.25")
    monkeypatch.setenv("HAKOBU_STRICT_BQ_MUTATING_DML_QUEUED", "5")
    lim = StrictLimits.from_env(table_writes_per_day=7)
    assert (lim.job_latency_s, lim.mutating_dml_queued, lim.table_writes_per_day,
            lim.mutating_dml_running) == (0.25, 5, 7, 2)


# -- counters and reset -----------------------------------------------------------------------

def test_counters_and_reset(strict, ds):
    layer = strict(StrictLimits(job_latency_s=0.0))
    c = client(layer)
    key = f"{P}.{ds}.t"
    threads = [threading.Thread(target=lambda i=i: c.query(merge(ds, i), job_retry=None)
                                .result()) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.query(f"UPDATE `{P}.{ds}.t` SET v = 'u' WHERE id = 0", job_retry=None).result()
    c.query(f"SELECT * FROM `{P}.{ds}.t`", job_retry=None).result()
    s = layer.stats()
    assert s["tables"][key]["mutating_dml"] == 5 and s["tables"][key]["writes_today"] == 5
    assert s["queries"] == 6 and s["jobs"] == 6 and sum(s["quota_errors"].values()) == 0
    assert s["tables"][key]["peak_dml_running"] <= 2
    layer.reset()
    assert layer.stats()["tables"] == {} and layer.stats()["jobs"] == 0


# -- classification (pure) --------------------------------------------------------------------

def q(sql, default=None):
    cfg = {"query": {"query": sql}}
    if default:
        cfg["query"]["defaultDataset"] = {"projectId": "p", "datasetId": default}
    return classify("p", cfg)


def test_classify_statements():
    m = q("MERGE `p.d.t` T USING s ON TRUE WHEN MATCHED THEN DELETE")
    assert m.mutating == {"p.d.t"} and m.dml_writes == {"p.d.t"} and not m.writes
    assert q("update `d`.`t` SET a = 1 WHERE TRUE").mutating == {"p.d.t"}
    assert q("DELETE d.t WHERE TRUE").mutating == {"p.d.t"}
    assert q("-- a comment; with a semicolon\nDELETE FROM `x.d.t` WHERE TRUE").mutating == \
        {"x.d.t"}
    ins = q("INSERT INTO `p.d.t` (a) VALUES (';')")
    assert ins.inserts == {"p.d.t"} and not ins.mutating and ins.dml_writes == {"p.d.t"}
    assert q("INSERT t (a) SELECT 1", default="d").inserts == {"p.d.t"}
    assert q("TRUNCATE TABLE `p.d.t`").dml_writes == {"p.d.t"} and not q(
        "TRUNCATE TABLE `p.d.t`").mutating
    ctas = q("CREATE OR REPLACE TABLE `p.d.t` CLUSTER BY a AS SELECT 1 AS a")
    assert ctas.writes == {"p.d.t"} and not ctas.dml_writes
    assert not q("CREATE TABLE `p.d.t` (a INT64, b STRING)").writes   # DDL: no data written
    assert not q("CREATE TABLE `p.d.t` (a INT64) OPTIONS(description='AS SELECT')").writes
    sel = q("SELECT * FROM `p.d.t`")
    assert sel.is_query and not (sel.writes | sel.mutating | sel.inserts)
    script = q("BEGIN TRANSACTION; DELETE FROM `p.d.a` WHERE TRUE; "
               "MERGE `p.d.b` T USING s ON FALSE WHEN NOT MATCHED THEN INSERT ROW; COMMIT")
    assert script.mutating == {"p.d.a", "p.d.b"}
    dest = classify("p", {"query": {"query": "SELECT 1", "destinationTable": {
        "projectId": "p", "datasetId": "d", "tableId": "t$20240101"}}})
    assert dest.writes == {"p.d.t"}
    assert classify("p", {"load": {"destinationTable": {"projectId": "p", "datasetId": "d",
                                                        "tableId": "t"}}}).writes == {"p.d.t"}
    cp = classify("p", {"copy": {"destinationTable": {"projectId": "p", "datasetId": "d",
                                                      "tableId": "c"}}})
    assert cp.writes == {"p.d.c"} and not cp.is_query


# -- hakobu's own destination through the layer -----------------------------------------------

def test_hakobu_merge_through_the_layer_works_and_is_counted(strict, ds, tmp_path):
    from hakobu.types import ColumnInfo, arrow_schema, column_spec
    from resources.bigquery_dest import BigQueryDestination

    layer = strict(StrictLimits(job_latency_s=0.05))
    settings = BigQuerySettings(endpoint=layer.url, retry_deadline_s=10.0)
    dest = BigQueryDestination(settings, P, ds, "US", tmp_path)
    specs = [column_spec(ColumnInfo("id", "bigint", "bigint", False)),
             column_spec(ColumnInfo("email", "varchar", "varchar(64)", True))]
    dest.ensure_table("members", specs, ["id"])
    with dest.staging_file("members", arrow_schema(specs)) as sf:
        sf.write(pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                           "email": ["a@x", "b@x", "c@x"]}))
        path = sf.close()
        stats = dest.merge("members", [path], specs, ["id"], run_id="strict1")
    assert stats.rows_staged == 3 and stats.dml_rows == 3 and dest.count("members") == 3
    s = layer.stats()
    target = s["tables"][f"{P}.{ds}.members"]
    assert target["mutating_dml"] == 1 and target["writes_today"] == 1
    staging = [t for t in s["tables"] if "strict1" in t]
    assert len(staging) == 1 and s["tables"][staging[0]]["writes_today"] == 1   # its load job
    assert sum(s["quota_errors"].values()) == 0
