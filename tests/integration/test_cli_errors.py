"""Expected failures are one clear line, never a stack trace (issue #12, point 4).

Each case runs `hakobu.cli.main([...])` as a newcomer would meet it, and reads the process's
stderr at the file-descriptor level (capfd: Dagster's and Rust's writes included): exactly one
line starts with `error:`, it says what to do, and nothing prints a traceback — until --debug.
"""

import pytest

from hakobu.cli import main
from hakobu.localenv.emulator import free_port
from tests.helpers import unique
from tests.integration.conftest import make_orders

ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: 100\n"


def one_error(capfd, *needles: str) -> str:
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Stack Trace" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """main() with a private DAGSTER_HOME; RUST_BACKTRACE restored afterwards."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    monkeypatch.setenv("HAKOBU_BIGQUERY_RETRY_DEADLINE", "5")
    return main


@pytest.fixture
def tenant_a(sql, schema, dataset, make_config):
    make_orders(sql, schema, n=20)
    return make_config({"a": (schema, dataset, ORDERS)})


def test_no_bigquery_credentials(cli, tenant_a, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("HAKOBU_BIGQUERY_ENDPOINT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    for argv in (["load", "a"], ["verify", "a"], ["backfill", "a"], ["grants", "plan"]):
        assert cli(argv) == 1, argv
        one_error(capfd, "no BigQuery credentials", "make up", "source .local/env",
                  "gcloud auth application-default login")
    assert cli(["--debug", "load", "a"]) == 1
    err = capfd.readouterr().err
    assert "Traceback" in err and "DefaultCredentialsError" in err


def test_emulator_that_does_not_answer(cli, tenant_a, monkeypatch, capfd):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HAKOBU_BIGQUERY_ENDPOINT", url)
    for argv in (["load", "a"], ["verify", "a"], ["grants", "plan"], ["grants", "apply"]):
        assert cli(argv) == 1, argv
        one_error(capfd, f"the BigQuery emulator at {url} does not answer", "make up")


def test_mysql_server_that_does_not_answer(cli, tenant_a, bq_env, capfd):
    port = free_port()
    clusters = tenant_a.root / "tenants" / "clusters.yaml"
    clusters.write_text(clusters.read_text().replace(f"port: {tenant_a.clusters['main'].port}",
                                                     f"port: {port}"))
    for argv in (["load", "a"], ["backfill", "a"], ["verify", "a"]):
        assert cli(argv) == 1, argv
        one_error(capfd, f"the MySQL server at 127.0.0.1:{port}", "does not answer",
                  "HAKOBU_MYSQL_HOST")


def test_wrong_password(cli, sql, schema, dataset, make_config, bq_env, monkeypatch, capfd):
    user = unique("hk_ops")
    sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-one'")
    try:
        sql(f"GRANT SELECT ON `{schema}`.* TO '{user}'@'%'")
        make_orders(sql, schema, n=5)
        config = make_config({"a": (schema, dataset, ORDERS)})
        clusters = config.root / "tenants" / "clusters.yaml"
        text = clusters.read_text().replace("user: root", f"user: {user}\n    password_env: "
                                                           "HK_OPS_PASSWORD")
        clusters.write_text(text)
        monkeypatch.setenv("HK_OPS_PASSWORD", "wrong-one")
        for argv in (["load", "a"], ["verify", "a"]):
            assert cli(argv) == 1, argv
            line = one_error(capfd, f"refused user '{user}': access denied",
                             "$HK_OPS_PASSWORD")
            assert "wrong-one" not in line
    finally:
        sql(f"DROP USER IF EXISTS '{user}'@'%'")


def test_unknown_tenant_or_table(cli, tenant_a, bq_env, capfd):
    for argv, needle in ((["load", "zz"], "unknown tenant 'zz'"),
                         (["backfill", "zz"], "unknown tenant 'zz'"),
                         (["verify", "zz"], "unknown tenant 'zz'"),
                         (["status", "--tenants", "zz"], "unknown tenant 'zz'"),
                         (["load", "a", "--tables", "orders,nope"], "unknown table 'nope'"),
                         (["verify", "a", "--tables", "nope"], "unknown table 'nope'")):
        assert cli(argv) == 1, argv
        one_error(capfd, needle, "tenants" if "tenant" in needle else "tables of this tenant")


def test_dataset_in_another_location(cli, tenant_a, dataset, bq_env, bq_client, capfd):
    from google.cloud import bigquery

    ds = bigquery.Dataset(f"hakobu-test.{dataset}")
    ds.location = "EU"
    bq_client.create_dataset(ds)
    assert cli(["load", "a"]) == 1
    one_error(capfd, f"dataset hakobu-test.{dataset} is in location EU",
              "the tenant file says US", "destination.location: EU")
    assert cli(["verify", "a"]) == 1
    one_error(capfd, "is in location EU")


def test_a_failed_table_is_one_line_too(cli, sql, schema, dataset, make_config, bq_env, capfd):
    make_orders(sql, schema, n=5)
    sql(f"CREATE TABLE `{schema}`.nokey (a INT, updated_at DATETIME, INDEX (updated_at))")
    make_config({"a": (schema, dataset, ORDERS + "- name: nokey\n  cursor: updated_at\n")})
    assert cli(["load", "a"]) == 1
    one_error(capfd, "nokey", "no primary key", "add a primary key")
