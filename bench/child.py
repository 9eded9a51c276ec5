"""One measured read, in a process of its own: `python -m bench.child '<json job>'`.

Prints one JSON line: rows, seconds (the read only, imports and planning excluded), the process's
RSS before the read (interpreter + imports) and its peak RSS (VmHWM) after it. A fresh process per
reader keeps one reader's allocations out of another's peak.

Readers:
  hakobu      hakobu's extractor (resources.mysql_source.iter_chunks / iter_parallel), in the
              mode the pipeline would use: see run_hakobu
  cx_stream   connectorx read_sql(return_type="arrow_stream"), one full-table SELECT, batches consumed
  pandas      pandas.read_sql through a SQLAlchemy (pymysql) engine
  pymysql     pymysql unbuffered cursor (SSCursor), fetchmany, rows turned into Arrow per batch
"""

import datetime as dt
import json
import sys
import time
from decimal import Decimal


def vm(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def encode_key(key) -> list | None:
    if key is None:
        return None
    out = []
    for v in key:
        if isinstance(v, dt.datetime):
            out.append({"datetime": v.isoformat()})
        elif isinstance(v, dt.date):
            out.append({"date": v.isoformat()})
        elif isinstance(v, Decimal):
            out.append({"decimal": str(v)})
        else:
            out.append(v)
    return out


def decode_key(key) -> tuple | None:
    if key is None:
        return None
    out = []
    for v in key:
        if isinstance(v, dict) and "datetime" in v:
            out.append(dt.datetime.fromisoformat(v["datetime"]))
        elif isinstance(v, dict) and "date" in v:
            out.append(dt.date.fromisoformat(v["date"]))
        elif isinstance(v, dict) and "decimal" in v:
            out.append(Decimal(v["decimal"]))
        else:
            out.append(v)
    return tuple(out)


def bench_objects(job: dict):
    """Cluster, tenant and table config for the fixture table, built directly (no YAML)."""
    from hakobu.config import Cluster, Tenant

    cluster = Cluster(name="bench", host=job["host"], port=job["port"], user=job["user"],
                      timezone="UTC", lag_seconds=job.get("lag_seconds", 0))
    table = {"name": job["table"], "cursor": "updated_at",
             "chunk_rows": job.get("chunk_rows", 50_000)}
    if job.get("query_rows"):
        table["query_rows"] = job["query_rows"]
    tenant = Tenant(tenant="bench", cluster="bench", source={"schema": job["schema"]},
                    destination={"project": "hakobu-bench", "dataset": "bench", "location": "US"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00", tables=[table])
    return cluster, tenant


def run_hakobu(job: dict) -> dict:
    """hakobu's extractor. job["mode"]:
      "initial" (default): a first load as sync_table reads it — the table in primary-key order
                 over `initial_splits` pk ranges at once (the cluster's max_connections, 2 by
                 default; job["splits"] overrides), under the cluster's governor, up to the
                 run's upper bound; last_key is the largest (cursor, pk) read;
      "main":    the (cursor, pk) pass through the cursor index from `after` up to the upper
                 bound (an incremental run; a full read when `after` is None);
      "nightly": main, then the NULL/zero-date cursor passes, as sync_table does;
      "full":    the primary-key pass used for tables without a cursor."""
    import pyarrow as pa

    from hakobu.keys import max_key_below
    from hakobu.planning import plan_for
    from resources.mysql_source import MySQLSource, initial_splits, iter_chunks, iter_parallel
    from resources.pressure import make_governor as governor_for

    cluster, tenant = bench_objects(job)
    source = MySQLSource(cluster, reader=job.get("reader"))
    plan = plan_for(source, tenant, tenant.tables[0])
    upper, _ = source.upper_bound(plan)
    after = decode_key(job.get("after"))
    mode = job.get("mode", "initial")
    gov = governor_for(cluster, source)
    splits = 1
    if mode == "initial":
        splits = job.get("splits") or initial_splits(source, plan, gov)
    elif mode == "full":
        passes = [("full", None, None)]
    else:
        passes = [("main", after, upper)]
        if mode == "nightly":
            side = ("nulls", "zeros") if plan.cursor_is_temporal else ("nulls",)
            passes += [(p, None, None) for p in side]
    # Arrow's compute kernels initialise on first use (~0.3 s, once per process): like the
    # imports, that is not part of the read
    max_key_below(plan, pa.table({k: pa.array([0]).cast(plan.spec(k).arrow_type)
                                  for k in (plan.cursor, *plan.primary_key)}), None)
    rss0 = vm("VmRSS")
    t0 = time.perf_counter()
    rows = chunks = side_rows = 0
    key = after
    if mode == "initial":
        for batch in iter_parallel(source, plan, "initial", upper, splits, gate=gov):
            rows += batch.num_rows
            chunks += 1
            k = max_key_below(plan, batch, None)
            if k is not None and (key is None or key < k):
                key = k
            del batch
    else:
        for pass_, start, bound in passes:
            for batch, k in iter_chunks(source, plan, pass_, start, bound, gate=gov):
                rows += batch.num_rows
                chunks += 1
                if pass_ in ("main", "full"):
                    key = k
                else:
                    side_rows += batch.num_rows
                del batch
    seconds = time.perf_counter() - t0
    source.dispose()
    return {"rows": rows, "seconds": seconds, "chunks": chunks, "rss_before": rss0,
            "side_rows": side_rows, "last_key": encode_key(key), "upper": str(upper),
            "chunk_rows": plan.chunk_rows, "query_rows": plan.rows_per_query, "splits": splits}


def _full_select(job: dict) -> str:
    return f"SELECT * FROM `{job['schema']}`.`{job['table']}`"


def run_cx_stream(job: dict) -> dict:
    import connectorx as cx

    url = f"mysql://{job['user']}@{job['host']}:{job['port']}"
    rss0 = vm("VmRSS")
    t0 = time.perf_counter()
    reader = cx.read_sql(url, _full_select(job), return_type="arrow_stream",
                         batch_size=job.get("batch_size", 10_000),
                         pre_execution_query=["SET time_zone = '+00:00'"])
    rows = batches = 0
    for batch in reader:
        rows += batch.num_rows
        batches += 1
        del batch
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "chunks": batches, "rss_before": rss0}


def run_pandas(job: dict) -> dict:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(f"mysql+pymysql://{job['user']}@{job['host']}:{job['port']}"
                              "/?charset=utf8mb4")
    rss0 = vm("VmRSS")
    t0 = time.perf_counter()
    with engine.connect() as conn:
        df = pd.read_sql(sa.text(_full_select(job)), conn)
    seconds = time.perf_counter() - t0
    rows = len(df)
    dtypes = {str(k): str(v) for k, v in df.dtypes.items()}
    del df
    engine.dispose()
    return {"rows": rows, "seconds": seconds, "chunks": 1, "rss_before": rss0,
            "dtypes": dtypes}


def run_pymysql(job: dict) -> dict:
    import pyarrow as pa
    import pymysql
    import pymysql.cursors

    conn = pymysql.connect(host=job["host"], port=job["port"], user=job["user"], password="",
                           charset="utf8mb4", cursorclass=pymysql.cursors.SSCursor,
                           init_command="SET time_zone = '+00:00'")
    rss0 = vm("VmRSS")
    t0 = time.perf_counter()
    rows = batches = 0
    with conn.cursor() as cur:
        cur.execute(_full_select(job))
        names = [d[0] for d in cur.description]
        while True:
            part = cur.fetchmany(job.get("batch_size", 10_000))
            if not part:
                break
            cols = list(zip(*part))
            batch = pa.Table.from_arrays([pa.array(c) for c in cols], names=names)
            rows += batch.num_rows
            batches += 1
            del batch, part, cols
    seconds = time.perf_counter() - t0
    conn.close()
    return {"rows": rows, "seconds": seconds, "chunks": batches, "rss_before": rss0}


READERS = {"hakobu": run_hakobu, "cx_stream": run_cx_stream, "pandas": run_pandas,
           "pymysql": run_pymysql}


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    result = READERS[job["reader_kind"]](job)
    result["peak_rss"] = vm("VmHWM")
    result["reader_kind"] = job["reader_kind"]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
