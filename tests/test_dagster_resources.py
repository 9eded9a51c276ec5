"""The Dagster side of issue #13: resources in the Definitions, an asset run against another IO,
the dagster/* table metadata, the typed full-reload config, freshness policies. No MySQL and no
BigQuery: the engine entry points are stubbed where a run would call them, the IO is a fake."""

import datetime as dt

import dagster as dg
import pytest

import assets.customer as customer
from assets.freshness import deadline_policy, table_policies
from assets.keys import customer_key
from assets.metadata import customer_metadata
from hakobu.config import load_config
from hakobu.errors import SourceError
from hakobu.sync import TableResult
from pipelines.build import BACKFILL, NIGHTLY, build_definitions, job_run_config
from resources.dagster import (BigQueryResource, HakobuIOResource, MySQLResource, open_io,
                               open_resource, resources_from_env)
from tests.test_config import GOOD, write

LANDED = ("acme-customer-dwh.cust_alpha.members",
          [("id", "INT64", "id"), ("ord_2024_a76493", "STRING", "ord$2024"),
           ("_hakobu_run", "STRING", None)])


class FakeDest:
    def __init__(self, tenant):
        self.project, self.dataset = tenant.destination.project, tenant.destination.dataset

    def count(self, table: str) -> int:
        return 42


class FakeIO:
    """Records what the run asked of it; its source refuses (no MySQL here)."""

    def __init__(self):
        self.asked: list[str] = []
        self.closed = False

    def source(self, cluster):
        self.asked.append(f"source {cluster.name}")
        raise SourceError(f"fake source for {cluster.name} (no MySQL in this test)")

    def gate(self, cluster):
        raise AssertionError("not reached")

    def customer(self, tenant):
        self.asked.append(f"customer {tenant.tenant}")
        return FakeDest(tenant)

    def warehouse(self, config, tenant):
        raise AssertionError("not reached")

    def grant_new_dataset(self, config, dest):
        raise AssertionError("not reached")

    def close(self):
        self.closed = True


class FakeIOResource(HakobuIOResource):
    def make_io(self):
        return FAKES.setdefault("io", FakeIO())


FAKES: dict = {}


def fake_resources() -> dict:
    bq, my = BigQueryResource(endpoint="http://127.0.0.1:9"), MySQLResource()
    return {"bigquery": bq, "mysql": my, "io": FakeIOResource(bigquery=bq, mysql=my)}


@pytest.fixture(autouse=True)
def _fresh_fakes():
    FAKES.clear()


def run(job_name: str, tenant: str, monkeypatch, *, run_config=None, tags=None,
        result: TableResult | None = None):
    """Execute a delivery job for one tenant with the fake IO; the engine entry points are
    replaced by stubs that record how they were called."""
    calls = []

    def stub(name):
        def engine(config, tenant_id, *, io, tables, on_result=None, **kw):
            calls.append((name, tenant_id, io, tables))
            out = [result] if result is not None else []
            for r in out:
                on_result(r)
            return out
        return engine

    monkeypatch.setattr(customer, "sync_tenant", stub("sync"))
    monkeypatch.setattr(customer, "backfill_tenant", stub("backfill"))
    config = load_config()
    defs = build_definitions(config, resources=fake_resources())
    job = defs.resolve_job_def(job_name)
    names = [result.table] if result else [t.name for t in config.tenant(tenant).tables]
    res = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=tenant, raise_on_error=False,
        asset_selection=[customer_key(n) for n in names],
        run_config={**job_run_config(job_name), **(run_config or {})}, tags=tags or {})
    return res, calls


def test_definitions_carry_the_resources(monkeypatch):
    monkeypatch.setenv("HAKOBU_BIGQUERY_ENDPOINT", "http://emulator.example:9050")
    monkeypatch.delenv("HAKOBU_BIGQUERY_CREDENTIALS", raising=False)
    defs = build_definitions(load_config())
    assert set(defs.resources) >= {"io", "bigquery", "mysql"}
    bq = defs.resources["bigquery"]
    assert isinstance(bq.endpoint, dg.EnvVar) and bq.endpoint.env_var_name == \
        "HAKOBU_BIGQUERY_ENDPOINT"                     # a name in the definitions, not a value
    assert bq.credentials_file is None
    with open_resource(bq) as ready:                   # resolved where it runs
        assert ready.settings().endpoint == "http://emulator.example:9050"
    node = defs.resolve_assets_def(customer_key("members"))
    assert "io" in node.required_resource_keys


def test_the_io_is_built_from_the_resources_given_and_closed_after():
    other = BigQueryResource(endpoint="http://127.0.0.1:9", project="other-project",
                             location="EU", retry_deadline_s=5.0)
    resources = {"bigquery": other, "mysql": MySQLResource(reader="pymysql"),
                 "io": HakobuIOResource(bigquery=other, mysql=MySQLResource(reader="pymysql"),
                                        work_dir="/tmp/hakobu-other")}
    config = load_config()
    with open_io(resources) as io:
        dest = io.customer(config.tenant("alpha"))
        assert dest.settings.endpoint == "http://127.0.0.1:9"
        assert dest.settings.default_project == "other-project"
        assert dest.settings.location == "EU" and dest.settings.retry_deadline_s == 5.0
        assert str(io.work_dir) == "/tmp/hakobu-other" and io.reader == "pymysql"
    # state belongs to the IO object: another one shares nothing
    with open_io(resources) as a, open_io(resources) as b:
        assert a is not b


def test_an_asset_run_uses_the_io_resource_it_is_given(monkeypatch):
    monkeypatch.setattr(customer, "sync_tenant", customer.sync_tenant)   # the real engine
    config = load_config()
    defs = build_definitions(config, resources=fake_resources())
    res = defs.resolve_job_def(NIGHTLY).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key="alpha", raise_on_error=False)
    assert not res.success
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "fake source for studio-east" in failure.event_specific_data.user_failure_data.description
    io = FAKES["io"]
    assert io.asked[0] == "source studio-east" and io.closed     # torn down after the step


def test_a_materialization_carries_the_dagster_table_metadata(monkeypatch):
    r = TableResult("alpha", "members", rows_read=120, rows_merged=7, bytes_staged=4096,
                    duration_s=1.25, throttled_s=0.5, landed={"customer": LANDED})
    res, calls = run(NIGHTLY, "alpha", monkeypatch, result=r)
    assert res.success, res.all_events
    [mat] = [m for m in res.asset_materializations_for_node("customer_tables")
             if m.asset_key == customer_key("members")]
    md = mat.metadata
    assert md["dagster/table_name"].value == "acme-customer-dwh.cust_alpha.members"
    assert md["dagster/row_count"].value == 42
    cols = md["dagster/column_schema"].schema.columns
    assert [(c.name, c.type) for c in cols] == [(n, t) for n, t, _ in LANDED[1]]
    assert cols[1].description == "MySQL column ord$2024"
    assert isinstance(md["rows_read"], dg.IntMetadataValue) and md["rows_read"].value == 120
    assert isinstance(md["bytes_staged"], dg.IntMetadataValue)
    assert isinstance(md["duration_s"], dg.FloatMetadataValue)
    assert isinstance(md["throttled_s"], dg.FloatMetadataValue)
    [(name, tenant, io, tables)] = calls
    assert name == "sync" and tenant == "alpha" and isinstance(io, FakeIO)


def test_the_row_count_comes_from_the_runs_own_comparison_when_it_found_the_table_equal(
        monkeypatch):
    """No COUNT query after an equal key comparison (its dest_rows is the table's count); a
    differing one is not trusted: the table is counted."""
    from hakobu.bucketing import Bucketing
    from hakobu.checksums import BucketDiff, Comparison

    b = Bucketing("hash", modulus=1)
    for differing, want in (([], 7), ([BucketDiff(0, None, None, 7, 6)], 42)):
        cmp = Comparison("alpha", "members", b, source_rows=7, dest_rows=7 if not differing
                         else 6, buckets_total=1, differing=differing)
        r = TableResult("alpha", "members", landed={"customer": LANDED}, check=cmp)
        res, _ = run(NIGHTLY, "alpha", monkeypatch, result=r)
        [mat] = [m for m in res.asset_materializations_for_node("customer_tables")
                 if m.asset_key == customer_key("members")]
        assert mat.metadata["dagster/row_count"].value == want


def test_metadata_types_numbers_and_leaves_text():
    r = TableResult("alpha", "members", rows_read=3, watermark="2026-01-01",
                    extra={"rows_per_s": "12.5", "bigquery_table": "members"})
    md = customer_metadata("alpha", r, None)
    assert isinstance(md["rows_per_s"], dg.FloatMetadataValue)
    assert md["watermark"] == "2026-01-01" and md["bigquery_table"] == "members"
    assert "dagster/row_count" not in md and "dagster/table_name" not in md


def test_the_backfill_job_is_a_full_reload_by_typed_run_config(monkeypatch):
    r = TableResult("alpha", "members", landed={"customer": LANDED})
    assert job_run_config(BACKFILL) == {"ops": {"customer_tables":
                                                {"config": {"mode": "full_reload"}}}}
    _, calls = run(BACKFILL, "alpha", monkeypatch, result=r)
    assert [c[0] for c in calls] == ["backfill"]
    _, calls = run(NIGHTLY, "alpha", monkeypatch, result=r)
    assert [c[0] for c in calls] == ["sync"]
    # a run launched before the mode was config: its tag still means full reload
    _, calls = run(NIGHTLY, "alpha", monkeypatch, result=r,
                   tags={"hakobu/mode": "full-reload"})
    assert [c[0] for c in calls] == ["backfill"]
    # the UI and Dagster backfills get the job's partitioned config
    defs = build_definitions(load_config(), resources=fake_resources())
    job = defs.resolve_job_def(BACKFILL)
    assert job.partitioned_config.get_run_config_for_partition_key("alpha") == \
        job_run_config(BACKFILL)


def test_a_mode_outside_the_config_type_is_refused():
    with pytest.raises(Exception, match="mode"):
        customer.DeliveryConfig(mode="everything")


def test_a_table_one_tenant_delivers_gets_its_deadline_as_a_freshness_policy(tmp_path):
    only_a = GOOD.replace("  - name: orders\n    cursor: updated_at\n",
                          "  - name: orders\n    cursor: updated_at\n  - name: refunds\n")
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + only_a,
                            "b.yaml": "tenant: b\ncluster: main\n"
                            + GOOD.replace("cust_a", "cust_b").replace("shop_a", "shop_b")})
    config = load_config(root)
    policies = table_policies(config)
    assert set(policies) == {"refunds"}                 # orders: two tenants, two partitions
    p = policies["refunds"]
    assert p.deadline_cron == "0 6 * * *" and p.timezone == "Asia/Tokyo"
    assert p.lower_bound_delta == dt.timedelta(hours=4)          # from the 02:00 run
    defs = build_definitions(config, resources=fake_resources())
    assert defs.resolve_assets_def(customer_key("refunds")).specs_by_key[
        customer_key("refunds")].freshness_policy == p
    assert defs.resolve_assets_def(customer_key("orders")).specs_by_key[
        customer_key("orders")].freshness_policy is None


def test_a_deadline_a_cron_policy_cannot_say_gets_none(tmp_path):
    weekly = GOOD.replace('cron: "0 2 * * *"', 'cron: "0 2 * * 1"')
    root = write(tmp_path, {"a.yaml": "tenant: a\ncluster: main\n" + weekly})
    policy, why = deadline_policy(load_config(root).tenant("a"))
    assert policy is None and "every day" in why


def test_resources_from_env_leave_unset_settings_at_their_defaults(monkeypatch):
    for var in ("HAKOBU_BIGQUERY_ENDPOINT", "HAKOBU_BIGQUERY_PROJECT", "HAKOBU_BIGQUERY_LOCATION",
                "HAKOBU_BIGQUERY_CREDENTIALS", "HAKOBU_READER", "HAKOBU_WORK_DIR"):
        monkeypatch.delenv(var, raising=False)
    r = resources_from_env()
    assert r["bigquery"].endpoint is None and r["mysql"].reader is None
    assert r["io"].work_dir is None
