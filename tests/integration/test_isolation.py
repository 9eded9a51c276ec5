"""One tenant's problem is that tenant's (issue #16), against the real MariaDB and the emulator.

Three tenants of one shared table; one of them broken in one of three ways — its file invalid,
its source cluster unreachable, its dataset not writable (it exists in another location than
the file says). The code location loads; the two others' schedules give their run requests and
the nightly job delivers them; the broken one is reported where an operator looks: the
`tenant_files` sensor fails naming the file and line, or its own run fails with the reason, the
deadline sensor fails its tables' checks once the deadline passes, `hakobu status` says it.

Schemas and datasets `hk_nam_*`, dropped afterwards.
"""

import datetime as dt
import socket
import textwrap

import dagster as dg
import pytest
from google.cloud import bigquery

from assets.deadlines import evaluate_deadlines
from assets.tenant_files import SENSOR_NAME, TenantFilesInvalid
from hakobu.cli import main
from hakobu.config import load_config
from pipelines.build import build_definitions
from tests.helpers import tenant_body, unique, write_config
from tests.integration.test_warehouse import bq_rows, datasets  # noqa: F401  (fixture)

ORDERS = "- name: orders\n  cursor: updated_at\n"
SHARED = "  tenant_column: tenant_id\n  tenant_value: {v}\n"


@pytest.fixture
def iso_schema(sql):
    name = unique("hk_nam")
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    sql(f"CREATE TABLE `{name}`.orders (tenant_id INT NOT NULL, id INT NOT NULL, "
        "updated_at DATETIME(6) NOT NULL, note VARCHAR(16), PRIMARY KEY (tenant_id, id), "
        "INDEX ix_cur (tenant_id, updated_at))")
    sql.many(f"INSERT INTO `{name}`.orders VALUES (%s, %s, %s, %s)",
             [(t, i, dt.datetime(2026, 1, 1, 0, i), f"t{t} #{i}") for t in (1, 2, 3)
              for i in range(1, 11)])
    yield name
    sql(f"DROP DATABASE IF EXISTS `{name}`")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]          # nobody listens on it once closed


def make_config(root, server, schema: str, dsets: dict, broken: str, now: dt.datetime):
    """a, b, c on one shared table; c broken as `broken` says. The schedule ran 30 minutes ago,
    the deadline is in 30 minutes (UTC)."""
    tick, due = now - dt.timedelta(minutes=30), now + dt.timedelta(minutes=30)
    bodies = {}
    for v, tid in enumerate(("a", "b", "c"), start=1):
        body = tenant_body(schema, dsets[tid], ORDERS, SHARED.format(v=v)) \
            .replace("'0 2 * * *'", f"'{tick.minute} {tick.hour} * * *'") \
            .replace("deliver_by: '06:00'", f"deliver_by: '{due:%H:%M}'")
        bodies[tid] = body
    if broken == "file":
        bodies["c"] = bodies["c"].replace(f"deliver_by: '{due:%H:%M}'", "deliver_by: '25:00'")
    write_config(root, server, bodies)
    (root / "tenants" / "clusters.yaml").write_text(textwrap.dedent(f"""\
        clusters:
          main:
            host: {server.host}
            port: {server.port}
            user: {server.user}
            lag_seconds: 0
          down:
            host: 127.0.0.1
            port: {closed_port()}
            user: nobody
        """))
    if broken == "source":
        c = root / "tenants" / "c.yaml"
        c.write_text(c.read_text().replace("cluster: main", "cluster: down"))
    return root


@pytest.mark.parametrize("broken", ["file", "source", "dataset"])
def test_one_broken_tenant_is_reported_and_the_others_deliver_on_schedule(
        broken, sql, iso_schema, datasets, mysql_server, strict_env, bq_client, tmp_path,
        monkeypatch, capsys):
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    dsets = {t: datasets("hk_nam") for t in ("a", "b", "c")}
    if broken == "dataset":              # c's dataset exists, in another location
        ds = bigquery.Dataset(f"hakobu-test.{dsets['c']}")
        ds.location = "EU"
        bq_client.create_dataset(ds)
    root = make_config(tmp_path / "cfg", mysql_server, iso_schema, dsets, broken, now)
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()

    # the code location loads (what pipelines/definitions.py does)
    config = load_config(root, isolate=True)
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    runnable = ["a", "b"] if broken == "file" else ["a", "b", "c"]
    assert sorted(defs.resolve_job_def("nightly").partitions_def.get_partition_keys()) == runnable

    # every schedule's run request, executed as the daemon would launch it
    job = defs.resolve_job_def("nightly")
    outcome = {}
    with dg.DagsterInstance.get() as instance:
        for tid in runnable:
            ctx = dg.build_schedule_context(repository_def=defs.get_repository_def())
            [req] = defs.resolve_schedule_def(f"nightly_{tid}").evaluate_tick(ctx).run_requests
            result = job.execute_in_process(instance=instance, partition_key=req.partition_key,
                                            tags=req.tags, raise_on_error=False)
            failures = [e.event_specific_data.error.message for e in result.all_events
                        if e.event_type_value == "STEP_FAILURE"]
            outcome[tid] = (result.success, " ".join(failures))
        assert outcome["a"][0] and outcome["b"][0], outcome
        for tid, v in (("a", 1), ("b", 2)):
            rows = bq_rows(bq_client, f"SELECT note FROM `hakobu-test.{dsets[tid]}.orders`")
            assert sorted(r["note"] for r in rows) == sorted(f"t{v} #{i}" for i in range(1, 11))

        # ... and the broken one is reported
        if broken == "file":
            with pytest.raises(dg.DagsterInvariantViolationError):
                defs.resolve_schedule_def("nightly_c")
            with pytest.raises(TenantFilesInvalid) as exc:
                defs.resolve_sensor_def(SENSOR_NAME)(dg.build_sensor_context())
            assert "tenant 'c' is left out" in str(exc.value)
            assert "c.yaml:14: deliver_by:" in str(exc.value)
        else:
            ok, why = outcome["c"]
            assert not ok
            assert "tenant c was not delivered" in why
            assert ("127.0.0.1" in why and "does not answer" in why if broken == "source"
                    else "is in location EU, but the tenant file says US" in why), why
            events, _ = evaluate_deadlines(config, instance, {}, now + dt.timedelta(minutes=31))
            verdict = {e.metadata["tenant"].value: e.passed for e in events}
            assert verdict == {"a": True, "b": True, "c": False}, events
            # nothing was written for c: its dataset holds no table (or does not exist)
            names = [] if broken == "source" else \
                [t.table_id for t in bq_client.list_tables(f"hakobu-test.{dsets['c']}")]
            assert names == []
            if broken == "source":
                with pytest.raises(Exception, match="404|Not found"):
                    bq_client.get_dataset(f"hakobu-test.{dsets['c']}")
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.split()}
    assert lines["a"].split()[2] != "never" and lines["b"].split()[2] != "never"
    if broken == "file":
        assert "c: LEFT OUT (not scheduled, not delivered):" in out and "c.yaml:14" in out
        assert main(["validate", "--offline"]) == 1
        assert "c.yaml:14: deliver_by:" in capsys.readouterr().err
    else:
        assert "c: the latest nightly run FAILED" in out and "tenant c was not delivered" in out
