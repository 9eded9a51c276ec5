"""`hakobu validate` runs the binlog health guard of every cluster with realtime tables: a
server without a binlog is named with what to set before a stream is ever started; the
binlog-enabled server passes."""

import json

from hakobu.cli import main
from tests.cdc.rt_helpers import config_of
from tests.helpers import Sql, fresh_schema

ITEMS = "CREATE TABLE `{s}`.items (id INT PRIMARY KEY, v VARCHAR(40))"
RT = "- name: items\n  delivery: realtime\n"


def _validate(root, monkeypatch, capsys) -> tuple[int, dict]:
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    capsys.readouterr()
    code = main(["validate", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_validate_names_the_binlog_settings_a_realtime_cluster_lacks(
        mysql_server, binlog_server, cdc_sql, datasets, bq_env, tmp_path, monkeypatch, capsys):
    shared = Sql(mysql_server)
    made = []
    try:
        for server, run, name in ((mysql_server, shared, "off"), (binlog_server, cdc_sql, "on")):
            schemas = fresh_schema(run, f"hk_val_{name}")
            s = next(schemas)
            made.append(schemas)
            run(ITEMS.format(s=s))
            config_of(tmp_path / name, server, {"r": (s, datasets(), RT, "")})
        _check(tmp_path, monkeypatch, capsys)
    finally:
        for schemas in made:
            next(schemas, None)              # drops the schema
        shared.close()


def _check(tmp_path, monkeypatch, capsys):
    code, out = _validate(tmp_path / "off", monkeypatch, capsys)
    assert code == 1 and len(out["problems"]) == 1, out
    problem = out["problems"][0]
    assert problem.startswith(f"{tmp_path / 'off' / 'tenants' / 'r.yaml'}"), problem
    assert "cluster 'main'" in problem and "log_bin" in problem and "to fix:" in problem
    code, out = _validate(tmp_path / "on", monkeypatch, capsys)
    assert code == 0 and out["problems"] == [], out
