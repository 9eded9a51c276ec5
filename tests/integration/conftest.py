import datetime as dt

import pytest

from hakobu.config import load_config
from tests.helpers import Sql, fresh_dataset, fresh_schema, tenant_body, unique, write_config


@pytest.fixture
def sql(mysql_server):
    s = Sql(mysql_server)
    yield s
    s.close()


@pytest.fixture
def schema(sql):
    yield from fresh_schema(sql, "hk_test")


@pytest.fixture
def dataset(bq_client):
    yield from fresh_dataset(bq_client, "hk_ds")


def make_orders(sql, schema, n=500, shared_tenants=None):
    """orders(id pk, updated_at indexed, amount DECIMAL, note utf8mb4, payload JSON)."""
    tcol = "tenant_id INT NOT NULL, " if shared_tenants else ""
    idx = "(tenant_id, updated_at)" if shared_tenants else "(updated_at)"
    sql(f"CREATE TABLE `{schema}`.orders (id BIGINT PRIMARY KEY, {tcol}"
        "updated_at DATETIME(6) NULL, amount DECIMAL(12,2), note VARCHAR(64), "
        f"payload JSON, INDEX ix_cur {idx})")
    base = dt.datetime(2026, 1, 1)
    rows = []
    for i in range(1, n + 1):
        t = [shared_tenants[i % len(shared_tenants)]] if shared_tenants else []
        rows.append((i, *t, base + dt.timedelta(minutes=i // 3), f"{i}.25", f"note {i} 🍣",
                     f'{{"i": {i}}}'))
    cols = "id, " + ("tenant_id, " if shared_tenants else "") + "updated_at, amount, note, payload"
    sql.many(f"INSERT INTO `{schema}`.orders ({cols}) VALUES "
             f"({', '.join(['%s'] * len(rows[0]))})", rows)


@pytest.fixture
def make_config(tmp_path, mysql_server, monkeypatch):
    def make(tenants: dict[str, tuple], **kw):
        bodies = {tid: tenant_body(*args) for tid, args in tenants.items()}
        root = write_config(tmp_path / unique("cfg"), mysql_server, bodies, **kw)
        monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
        return load_config(root)
    return make


FULL_READ_KEY_ENV = "HK_FR_TEST_KEY"       # the warehouse hash key of the full-read tests


@pytest.fixture
def full_read_on(monkeypatch, bq_live):
    """The product's default (the suite sets 0: tests/conftest.py); tables.get with numRows
    (the whole read's safety valve reads it; tests/bq_live.py counts only when asked)."""
    monkeypatch.delenv("HAKOBU_FULL_READ_BELOW_KIB", raising=False)
    monkeypatch.setenv(FULL_READ_KEY_ENV, "full-read-key")
    monkeypatch.setattr(bq_live, "count_rows", True)
