"""Secrets never appear in errors or logs; odd identifiers are quoted, never pasted."""

import logging

import pytest

from hakobu.config import Cluster, Tenant
from hakobu.errors import HakobuError
from hakobu.planning import plan_for
from hakobu.errors import SourceError
from resources.mysql_source import MySQLSource

SECRET = "p@ss:w/rd%SECRET-7731"


@pytest.mark.parametrize("reader", ["connectorx", "pymysql"])
def test_wrong_password_error_never_shows_it(mysql_server, monkeypatch, caplog, reader):
    monkeypatch.setenv("HAKOBU_TEST_SECRET_PW", SECRET)
    cluster = Cluster(name="sec", host=mysql_server.host, port=mysql_server.port,
                      user="hakobu_nobody", password_env="HAKOBU_TEST_SECRET_PW")
    source = MySQLSource(cluster, reader=reader)
    caplog.set_level(logging.DEBUG)
    from hakobu.plan import TablePlan
    plan = TablePlan(tenant="t", schema="s", table="x", specs=(), primary_key=("id",),
                     cursor=None, chunk_rows=10)
    for action in (source.ping, lambda: source.read_chunk(plan, "SELECT 1 AS id")):
        with pytest.raises(HakobuError) as exc:
            action()
        text = str(exc.value) + repr(exc.value) + str(exc.value.__cause__ or "")
        assert "hakobu_nobody" in text or "Access denied" in text or "denied" in text.lower()
        assert SECRET not in text and "SECRET-7731" not in text
    assert "SECRET-7731" not in caplog.text
    assert "SECRET-7731" not in repr(cluster.password())
    # connectorx's own report of a refused login (met when the server refuses it after the
    # pymysql check, e.g. a password rotated meanwhile): redacted, and terminal — its pool
    # says "timed out", which must not make a wrong password look like a network blip
    cx_text = (f"timed out waiting for connection: {source._cx_url()} MySqlError {{ ERROR 1045 "
               "(28000): Access denied for user 'hakobu_nobody'@'127.0.0.1' }")
    err = source._cx_error(RuntimeError(cx_text))
    assert type(err) is SourceError and "Access denied" in str(err)
    assert SECRET not in str(err) and "SECRET-7731" not in str(err)
    source.dispose()


def test_odd_identifiers_are_quoted_on_the_source_and_mapped_for_bigquery(sql, schema,
                                                                          mysql_server):
    """Any MySQL name is taken (issue #16): on the source it is only ever quoted — a backtick in
    a name is doubled, never ends the identifier — and BigQuery gets hakobu.naming's name."""
    from hakobu.naming import column_name
    from resources.mysql_sql import chunk_sql

    sql(f"CREATE TABLE `{schema}`.`odd``name` (id INT PRIMARY KEY, `order date` DATE, "
        "`x` INT, updated_at DATETIME, INDEX (updated_at))")
    cluster = Cluster(name="m", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    source = MySQLSource(cluster)
    tenant = Tenant(tenant="t", cluster="m", source={"schema": schema},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                    tables=[{"name": "odd`name", "cursor": "updated_at"}])
    plan = plan_for(source, tenant, tenant.tables[0])
    assert plan.bq_table == "odd_name_" + plan.bq_table[-6:] and "`" not in plan.bq_table
    assert "FROM `" + schema + "`.`odd``name` AS" in chunk_sql(plan, "main", None, None)
    assert [s.bq_name for s in plan.specs] == ["id", column_name("order date"), "x",
                                               "updated_at"]
    assert source.read_chunk(plan, chunk_sql(plan, "main", None, None)).num_rows == 0
    from hakobu.config import Table
    ok = Table(name="odd`name", cursor="updated_at", exclude=["order date"])   # validated
    assert [s.name for s in plan_for(source, tenant, ok).specs] == ["id", "x", "updated_at"]
    source.dispose()
