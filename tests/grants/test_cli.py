"""The CLI end to end: the analyst workflow, exit codes, and errors that change nothing."""

import argparse

from google.cloud.bigquery import AccessEntry

from hakobu.grants import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyst_workflow(grants_env, capsys):
    env = grants_env
    a = env.customer_a

    code, out, err = run(capsys, "grants", "plan")
    assert (code, err) == (0, "") and "No changes." in out

    # 1. grant: the CSV gets one sorted line and the dataset is applied at once
    code, out, err = run(capsys, "grant", a, "user:Alice@Example.com", "--role", "READER")
    assert (code, err) == (0, "")
    assert f"+ READER user:alice@example.com ({a})" in out
    assert "+ READER user:alice@example.com   (add)" in out
    assert env.csv.read_text() == f"dataset,role,member\n{a},READER,user:alice@example.com\n"
    assert env.member_entries(a) == {("READER", "userByEmail", "alice@example.com")}

    # a bare dataset name works when it is unique; a new role replaces the old one
    code, out, _ = run(capsys, "grant", a.split(".")[1], "user:alice@example.com",
                       "--role", "roles/bigquery.dataEditor")
    assert code == 0
    assert "- WRITER" not in out and "+ WRITER user:alice@example.com   (add)" in out
    assert "- READER user:alice@example.com   (remove)" in out
    assert env.member_entries(a) == {("WRITER", "userByEmail", "alice@example.com")}

    # 2. plan after someone edits the CSV by hand: exit 2, terraform-like diff
    env.csv.write_text(env.csv.read_text() + f"{env.customer_b},READER,group:bi@example.com\n")
    code, out, _ = run(capsys, "grants", "plan")
    assert code == 2
    assert f"~ {env.customer_b}\n    + READER group:bi@example.com" in out
    assert f"{env.missing}: dataset not found, skipped" in out
    assert "Plan: 1 to add, 0 to remove" in out

    # 3. apply, then plan is clean again
    code, out, _ = run(capsys, "grants", "apply")
    assert code == 0 and "Applied: 1 added, 0 removed" in out
    assert run(capsys, "grants", "plan")[0] == 0

    # revoke: gone from the CSV and from BigQuery
    code, out, _ = run(capsys, "revoke", a, "user:alice@example.com")
    assert code == 0 and "- WRITER user:alice@example.com   (remove)" in out
    assert env.csv.read_text() == f"dataset,role,member\n{env.customer_b},READER,group:bi@example.com\n"
    assert env.member_entries(a) == set()


def test_drift_from_the_cli(grants_env, capsys):
    env = grants_env
    a = env.customer_a
    env.console_grant(a, AccessEntry("READER", "userByEmail", "console@example.com"))

    code, out, _ = run(capsys, "grants", "plan")
    assert code == 0  # drift alone changes nothing under the report policy ...
    assert "! READER user:console@example.com   (drift: granted outside" in out
    assert "1 drift" in out
    assert run(capsys, "grants", "plan", "--drift", "revert")[0] == 2  # ... but would under revert

    code, out, _ = run(capsys, "grants", "apply")
    assert code == 0 and "1 drift reported" in out
    code, out, _ = run(capsys, "grants", "apply", "--drift", "adopt")
    assert code == 0 and "~ READER user:console@example.com   (adopt)" in out
    assert f"{a},READER,user:console@example.com" in env.csv.read_text()

    # revoke also removes a console-added grant that was never in the CSV
    env.console_grant(a, AccessEntry("OWNER", "userByEmail", "other@example.com"))
    code, out, _ = run(capsys, "revoke", a, "user:other@example.com")
    assert code == 0 and f"{env.csv}: unchanged" in out
    assert "- OWNER  user:other@example.com   (revert)" in out
    assert env.member_entries(a) == {("READER", "userByEmail", "console@example.com")}


def test_errors_exit_1_and_change_nothing(grants_env, capsys):
    env = grants_env
    a = env.customer_a
    env.write_csv(f"{a},READER,user:a@example.com")
    before = env.csv.read_bytes()

    code, out, err = run(capsys, "grant", a, "alice@example.com", "--role", "VIEWER")
    assert code == 1 and "no kind; write it as user:alice@example.com" in err
    assert "unknown role 'VIEWER'" in err
    code, _, err = run(capsys, "grant", "hakobu-test.nope", "user:b@example.com", "--role",
                       "READER")
    assert code == 1 and "'hakobu-test.nope' is not a dataset hakobu manages" in err
    assert env.csv.read_bytes() == before and env.member_entries(a) == set()

    env.csv.write_bytes(before + f"{a},READER,user:broken\n".encode())
    for argv in (["grants", "plan"], ["grants", "apply"],
                 ["grant", a, "user:c@example.com", "--role", "READER"]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and f"{env.csv}:3: member 'user:broken'" in err, argv
    assert env.member_entries(a) == set()


def test_grant_creates_a_missing_csv(grants_env, capsys):
    env = grants_env
    env.csv.unlink()
    assert run(capsys, "grants", "plan")[0] == 1
    code, _, _ = run(capsys, "grant", env.customer_b, "domain:example.com", "--role", "reader")
    assert code == 0
    assert env.csv.read_text() == f"dataset,role,member\n{env.customer_b},READER,domain:example.com\n"


def test_register_plugs_into_another_parser():
    parser = argparse.ArgumentParser(prog="hakobu")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("sync")
    cli.register(subparsers)
    args = parser.parse_args(["grants", "apply", "--drift", "revert"])
    assert args.func is cli.cmd_apply and args.drift == "revert"
    args = parser.parse_args(["grant", "p.d", "user:a@example.com", "--role", "OWNER"])
    assert args.func is cli.cmd_grant and args.role == "OWNER"


def test_grant_when_bigquery_is_unreachable_keeps_the_csv_and_says_so(grants_env, capsys,
                                                                     monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("HAKOBU_BIGQUERY_ENDPOINT", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("HAKOBU_BIGQUERY_RETRY_DEADLINE", "1")
    code, _, err = run(capsys, "grant", grants_env.customer_a, "user:a@example.com",
                       "--role", "READER")
    assert code == 1 and "cannot read the dataset" in err
    assert "is updated; BigQuery is not: run `hakobu grants apply`" in err
    assert "user:a@example.com" in grants_env.csv.read_text()
