"""CLI conventions (issue #12, point 6): --version, --json where a script wants it, exit codes
in --help and the README, a progress bar for first loads as for backfills."""

import json
import os
from pathlib import Path

import pytest

from hakobu.cli import load as cli_load
from hakobu.cli import build_parser, main
from tests.integration.conftest import make_orders

REPO = Path(__file__).resolve().parents[2]
ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: 50\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("hakobu 0.1.0 (dagster 1.13.")


def test_exit_codes_are_in_every_help_and_the_readme(capsys):
    parser = build_parser()
    commands = ["load", "backfill", "validate", "status", "verify", "up", "down"]
    for argv in ([], *([c] for c in commands), ["grants", "plan"], ["grants", "apply"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--help"])
        text = capsys.readouterr().out
        assert "exit codes:" in text and "130" in text and "143" in text, argv
        assert '"error:"' in text and "--debug" in text
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Exit codes"):][:1500]
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |", "| 143 |"):
        assert code in section, code


def _json(capsys) -> object:
    return json.loads(capsys.readouterr().out)        # stdout is JSON and nothing else


def test_json_on_load_validate_status_verify_and_grants_plan(sql, schema, dataset, make_config,
                                                             bq_env, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    make_orders(sql, schema, n=120)
    make_config({"a": (schema, dataset, ORDERS)},
                permissions=f"dataset,role,member\nhakobu-test.{dataset},READER,"
                            "user:ana@example.com\n")
    assert main(["validate", "--json"]) == 0
    v = _json(capsys)
    assert v["ok"] and v["tenants"] == 1 and v["tables"] == 1 and v["problems"] == []
    assert main(["validate", "--offline", "--json"]) == 0
    assert _json(capsys)["checked"] == "files only"

    assert main(["load", "a", "--json"]) == 0
    ld = _json(capsys)
    assert ld["ok"] and ld["status"] == "SUCCESS" and ld["tenant"] == "a"
    [t] = ld["tables"]
    assert t["table"] == "orders" and t["rows_read"] == 120 and t["mode"] == "initial"

    assert main(["status", "--json"]) == 0
    [st] = _json(capsys)
    assert st["tenant"] == "a" and st["last_delivery"]

    assert main(["verify", "a", "--json"]) == 0
    [vf] = _json(capsys)
    assert vf["equal"] and vf["target"] == "customer/orders" and vf["rows"] == 120

    assert main(["grants", "plan", "--json"]) == 0      # applied when the dataset was made
    assert not _json(capsys)["pending"]
    perms = Path(os.environ["HAKOBU_CONFIG_DIR"]) / "permissions.csv"
    perms.write_text(perms.read_text() + f"hakobu-test.{dataset},WRITER,user:bo@example.com\n")
    code = main(["grants", "plan", "--json"])
    plan = _json(capsys)
    assert code == 2 and plan["pending"] and plan["complete"]
    [ds] = [d for d in plan["datasets"] if d["dataset"] == f"hakobu-test.{dataset}"]
    assert ds["add"] == [{"role": "WRITER", "member": "user:bo@example.com"}]

    # a failed load in JSON: the reason in the document, one error line on stderr
    sql(f"CREATE TABLE `{schema}`.nokey (a INT, updated_at DATETIME, INDEX (updated_at))")
    make_config({"a": (schema, dataset, ORDERS + "- name: nokey\n  cursor: updated_at\n")})
    assert main(["load", "a", "--json"]) == 1
    captured = capsys.readouterr()
    failed = json.loads(captured.out)
    assert not failed["ok"] and failed["status"] == "FAILURE" and "no primary key" in \
        failed["error"]
    assert [line for line in captured.err.splitlines() if line.startswith("error:")]


def test_a_first_load_draws_a_progress_bar_and_an_incremental_one_does_not(
        sql, schema, dataset, make_config, bq_env, tmp_path, monkeypatch, capfd):
    from hakobu.progress import add_listener, remove_listener

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    monkeypatch.setattr(cli_load, "LOAD_BAR_DELAY_S", 0.0)     # the test's load is short
    make_orders(sql, schema, n=400)
    make_config({"a": (schema, dataset, ORDERS)})
    seen = []

    def record(p):
        seen.append((p.mode, p.table, p.done, p.total, p.finished))

    add_listener(record)
    try:
        assert main(["load", "a"]) == 0
        first = capfd.readouterr().err
        assert main(["load", "a"]) == 0                 # incremental: nothing to show
        second = capfd.readouterr().err
    finally:
        remove_listener(record)
    assert "a/orders" in first and "400/400" in first and "rows/s" in first, first
    assert "a/orders" not in second, second
    assert {s[0] for s in seen} == {"first load"}
    assert seen[-1][2] == 400 and seen[-1][4] and seen[-1][3] > 0   # total: InnoDB's estimate
    dones = [s[2] for s in seen]
    assert dones == sorted(dones) and len(dones) >= 8       # chunks of 50
