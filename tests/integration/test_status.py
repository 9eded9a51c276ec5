"""`hakobu status` after a real delivery (MariaDB + emulator + a Dagster instance)."""

import datetime as dt
import json

from hakobu.cli import main
from tests.integration.conftest import make_orders

ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: 100\n"


def test_status_reports_delivery_lag_prediction_and_margin(sql, schema, dataset, make_config,
                                                           bq_env, bq_client, tmp_path,
                                                           monkeypatch, capsys):
    from tests.helpers import unique

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    make_orders(sql, schema, n=120)
    other, other_schema = unique("hk_wh"), unique("hk_wh")
    sql(f"CREATE DATABASE `{other_schema}`")
    try:
        make_config({"a": (schema, dataset, ORDERS), "b": (other_schema, other, ORDERS)})
        assert main(["load", "a"]) == 0
        capsys.readouterr()
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        table, tonight = out.split("\n\nTonight (")       # per tenant, then per cluster
        lines = {ln.split()[0]: ln for ln in table.splitlines()[1:-1]}
        assert set(lines) == {"a", "b"}
        assert "never" in lines["b"] and "no runs yet" in lines["b"]
        assert "never" not in lines["a"] and "no runs yet" not in lines["a"]
        # b has no history: the cluster's default; a's history: its one run
        cluster = tonight.splitlines()[2].split()
        assert cluster[1] == "2" and cluster[-1] != "-", tonight   # two tenants, a margin
        assert main(["status", "--json", "--tenants", "a"]) == 0
        [s] = json.loads(capsys.readouterr().out)
        assert s["tonight"]["expected_basis"] == "history of 1 run"
        assert s["cluster_tonight"]["tenants"] == ["a", "b"]
        now = dt.datetime.now(dt.timezone.utc)
        # the fixture's rows stop at 2026-01-01 00:40 (UTC cluster): that is the watermark
        wm = dt.datetime(2026, 1, 1, 0, 40, tzinfo=dt.timezone.utc)
        assert abs(s["watermark_lag_s"] - (now - wm).total_seconds()) < 120
        assert 0 <= s["staleness_s"] < 120      # complete to the run's upper bound (lag 0)
        assert s["tables_delivered"] == 1 and s["runs_measured"] == 1
        assert 0 < s["median_run_s"] < 120
        nxt = dt.datetime.fromisoformat(s["next_run"])
        finish = dt.datetime.fromisoformat(s["predicted_finish"])
        deadline = dt.datetime.fromisoformat(s["deadline"])
        assert nxt > now and finish == nxt + dt.timedelta(seconds=s["median_run_s"])
        assert s["margin_s"] == (deadline - finish).total_seconds() > 0
        assert s["last_deadline"].startswith(("met", "missed by"))    # delivered: final
    finally:
        sql(f"DROP DATABASE IF EXISTS `{other_schema}`")
        bq_client.delete_dataset(f"hakobu-test.{other}", delete_contents=True, not_found_ok=True)
