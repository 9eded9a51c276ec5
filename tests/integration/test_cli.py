"""The hakobu command end to end: validate and load (through Dagster, recorded in the instance)."""

import dagster as dg

from hakobu.cli import main
from tests.integration.conftest import make_orders

ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: 100\n"


def test_load_runs_the_dagster_materialization(sql, schema, dataset, make_config, bq_env,
                                               tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    make_orders(sql, schema, n=250)
    make_config({"a": (schema, dataset, ORDERS)})
    assert main(["validate"]) == 0
    assert "OK: 1 tenants, 1 tables" in capsys.readouterr().out
    assert main(["load", "a"]) == 0
    out = capsys.readouterr().out
    assert "orders" in out and "250" in out
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "a" and run.tags["hakobu/cluster"] == "main"
        ev = instance.get_latest_materialization_event(dg.AssetKey(["customer", "orders"]))
        md = ev.asset_materialization.metadata
        assert md["rows_read"].value == 250
        assert md["bytes_staged"].value > 0
        assert md["watermark"].value.startswith("2026-01-01")
        assert ev.asset_materialization.partition == "a"


def test_validate_reports_source_problems(sql, schema, dataset, make_config, capsys):
    make_orders(sql, schema, n=5)
    make_config({"a": (schema, dataset, ORDERS + "- name: ghosts\n  cursor: updated_at\n")})
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "a.yaml" in err and "a/ghosts" in err and "does not exist" in err
    assert main(["validate", "--offline"]) == 0


def test_load_of_unknown_tenant_or_table(sql, schema, dataset, make_config, capsys):
    make_orders(sql, schema, n=5)
    make_config({"a": (schema, dataset, ORDERS)})
    assert main(["load", "zz"]) == 1
    assert "unknown tenant 'zz'" in capsys.readouterr().err
    assert main(["load", "a", "--tables", "orders,nope"]) == 1
    assert "unknown table 'nope'" in capsys.readouterr().err


def test_failed_table_fails_the_run_with_its_reason(sql, schema, dataset, make_config, bq_env,
                                                    tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    make_orders(sql, schema, n=5)
    sql(f"CREATE TABLE `{schema}`.nokey (a INT, updated_at DATETIME, INDEX (updated_at))")
    make_config({"a": (schema, dataset, ORDERS + "- name: nokey\n  cursor: updated_at\n")})
    assert main(["load", "a"]) == 1
    captured = capsys.readouterr()
    assert "orders" in captured.out          # the good table was delivered
    assert "no primary key" in captured.err
