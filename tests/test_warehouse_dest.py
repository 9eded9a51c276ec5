"""The warehouse destination's SQL, without BigQuery: every MERGE and delete is scoped to the
tenant's slice, and a concurrent-DML conflict is retried (the statements are idempotent)."""

import pytest

from hakobu.errors import LoadError
from hakobu.policy import tenant_bucket
from hakobu.types import ColumnInfo, column_spec
from resources.bigquery_client import BigQuerySettings
from resources.warehouse_dest import WarehouseDestination


class Job:
    num_dml_affected_rows = 3


@pytest.fixture
def dest(tmp_path, monkeypatch):
    d = WarehouseDestination(BigQuerySettings(endpoint="http://127.0.0.1:9"), "hakobu-test",
                             "dwh", "US", tmp_path, tenant="acme",
                             bucket=tenant_bucket("acme"), buckets=4000)
    d.statements = []

    def sql(query, params=(), table=None):
        d.statements.append(query)
        return Job()
    monkeypatch.setattr(d, "sql", sql)
    monkeypatch.setattr(d, "_load_staging",
                        lambda table, files, specs, run_id, stats, extra=(): f"stg_{run_id}")
    d.dropped = []
    monkeypatch.setattr(d, "drop_table", d.dropped.append)
    monkeypatch.setattr("resources.warehouse_dest.time.sleep", lambda s: None)
    return d


SPECS = [column_spec(ColumnInfo("id", "bigint", "bigint", False)),
         column_spec(ColumnInfo("email", "varchar", "varchar(64)", True))]
EXTRA = [("tenant_id", "STRING"), ("_hakobu_tenant_bucket", "INT64")]


def test_merge_is_scoped_to_the_tenant_in_on_and_in_the_delete(dest):
    scope = f"T.`tenant_id` = 'acme' AND T.`_hakobu_tenant_bucket` = {tenant_bucket('acme')}"
    dest.merge("members", [], SPECS, ["tenant_id", "id"], extra=EXTRA, delete_scope="TRUE",
               run_id="r1")
    merge = next(s for s in dest.statements if s.startswith("MERGE"))
    assert f" S ON {scope} AND T.`tenant_id` = S.`tenant_id` AND T.`id` = S.`id`" in merge
    assert merge.endswith(f"WHEN NOT MATCHED BY SOURCE AND ({scope} AND (TRUE)) THEN DELETE")
    assert "stg_acme_r1" in merge                      # staging tables carry the tenant
    assert dest.dropped == ["stg_acme_r1"]             # and are deleted after the MERGE
    dest.statements.clear()
    dest.swap_slice("members", "shadow", ["id", "email", "tenant_id"], ["tenant_id", "id"])
    [swap] = dest.statements
    assert f"ON {scope} AND" in swap and swap.endswith(f"AND {scope} THEN DELETE")
    assert dest.ref("_hakobu_state") == "`hakobu-test.dwh._hakobu_state_acme`"


def test_a_concurrent_dml_conflict_is_retried_other_errors_are_not(dest, monkeypatch):
    calls = []

    def flaky(query, params=(), table=None):
        calls.append(query)
        if len(calls) == 1:
            raise LoadError("BigQuery query failed: Could not serialize access to table "
                            "dwh.members due to concurrent update")
        return Job()
    monkeypatch.setattr(dest, "sql", flaky)
    assert dest.swap_slice("members", "shadow", ["id"], ["tenant_id", "id"]) == 3
    assert len(calls) == 2
    monkeypatch.setattr(dest, "sql", lambda *a, **k: (_ for _ in ()).throw(
        LoadError("Syntax error")))
    with pytest.raises(LoadError, match="Syntax error"):
        dest.replace_slice("members", [], SPECS, EXTRA, run_id="r")


def test_invalid_tenant_ids_cannot_reach_sql(tmp_path):
    with pytest.raises(ValueError):
        WarehouseDestination(BigQuerySettings(endpoint="http://127.0.0.1:9"), "hakobu-test",
                             "dwh", "US", tmp_path, tenant="x' OR TRUE --", bucket=1,
                             buckets=4000)
