"""Secrets never appear in errors or logs; odd identifiers are quoted or refused, never pasted."""

import logging

import pytest

from hakobu.config import Cluster, Tenant
from hakobu.errors import HakobuError, SchemaError
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
    source.dispose()


def test_odd_identifiers_are_quoted_or_refused(sql, schema, mysql_server):
    sql(f"CREATE TABLE `{schema}`.`odd``name` (id INT PRIMARY KEY, `order date` DATE, "
        "`x` INT, updated_at DATETIME, INDEX (updated_at))")
    cluster = Cluster(name="m", host=mysql_server.host, port=mysql_server.port,
                      user=mysql_server.user)
    source = MySQLSource(cluster)
    tenant = Tenant(tenant="t", cluster="m", source={"schema": schema},
                    destination={"project": "hakobu-test", "dataset": "x"},
                    schedule={"cron": "0 2 * * *"}, deliver_by="06:00",
                    tables=[{"name": "x", "cursor": "updated_at"}])
    # table names come from config and must be plain identifiers there
    with pytest.raises(Exception, match="String should match pattern"):
        Tenant(**{**tenant.model_dump(by_alias=True, exclude={"file"}),
                  "tables": [{"name": "odd`name"}]})
    sql(f"CREATE TABLE `{schema}`.t2 (id INT PRIMARY KEY, `order date` DATE, "
        "updated_at DATETIME, INDEX (updated_at))")
    t2 = tenant.model_copy(update={"tables": [tenant.tables[0].model_copy(update={"name": "t2"})]})
    with pytest.raises(SchemaError, match="'order date'.*cannot be a BigQuery column name"):
        source.plan_table(t2, t2.tables[0])
    from hakobu.config import Table
    ok = Table(name="t2", cursor="updated_at", exclude=["order date"])   # validated
    assert [s.name for s in source.plan_table(t2, ok).specs] == ["id", "updated_at"]
    source.dispose()
