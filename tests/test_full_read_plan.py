"""Which tables are read whole every night (hakobu.planning.full_read_reason): pure, no server."""

import pytest

from hakobu.config.models import Cluster, Table, full_read_default
from hakobu.errors import ConfigError
from hakobu.planning import full_read_reason
from hakobu.ports import Reflected

KIB = 1024


def refl(data_kib: float | None, distinct: dict | None = None) -> Reflected:
    return Reflected([], ["id"], {}, 100, frozenset({"PRIMARY"}),
                     data_bytes=None if data_kib is None else int(data_kib * KIB),
                     distinct=distinct or {})


def cluster(kib: int = 1024) -> Cluster:
    return Cluster(name="c", host="h", user="u", full_read_below_kib=kib)


def table(**kw) -> Table:
    return Table(name="t", cursor="updated_at", **kw)


def test_small_table_read_whole_large_one_not():
    assert "read whole: ~16 KiB" in full_read_reason(refl(16), table(), cluster(), None)
    assert full_read_reason(refl(1024), table(), cluster(), None) is None   # at the limit
    assert full_read_reason(refl(5000), table(), cluster(), None) is None


def test_shared_table_divides_by_its_tenants():
    big = refl(40 * KIB, {"org_id": 100})           # 40 MiB over 100 tenants: ~410 KiB each
    key = ("org_id", "id")
    assert "/ 100 tenants" in full_read_reason(big, table(), cluster(), "org_id", key)
    assert full_read_reason(big, table(), cluster(), None) is None          # per-schema: 40 MiB
    few = refl(40 * KIB, {"org_id": 10})
    assert full_read_reason(few, table(), cluster(), "ORG_ID", key) is None


def test_shared_table_keyed_without_the_tenant_column_stays_incremental():
    """A whole read goes in key order: on a key without the tenant column in front it would
    pass every tenant's rows to find this one's."""
    big = refl(40 * KIB, {"org_id": 100})
    assert full_read_reason(big, table(), cluster(), "org_id", ("id",)) is None
    assert full_read_reason(big, table(), cluster(), "org_id", ("id", "org_id")) is None


def test_limits_and_exclusions():
    assert full_read_reason(refl(16), table(), cluster(0), None) is None        # 0: never
    assert full_read_reason(refl(16), table(full_read_below_kib=0), cluster(), None) is None
    assert full_read_reason(refl(5000), table(full_read_below_kib=8000), cluster(0), None)
    assert full_read_reason(refl(16), table(delivery="realtime"), cluster(), None) is None
    assert full_read_reason(refl(None), table(), cluster(), None) is None     # size unknown


def test_default_from_the_environment(monkeypatch):
    monkeypatch.delenv("HAKOBU_FULL_READ_BELOW_KIB", raising=False)
    assert full_read_default() == 1024
    monkeypatch.setenv("HAKOBU_FULL_READ_BELOW_KIB", "64")
    assert Cluster(name="c", host="h", user="u").full_read_below_kib == 64
    monkeypatch.setenv("HAKOBU_FULL_READ_BELOW_KIB", "lots")
    with pytest.raises(ConfigError, match="HAKOBU_FULL_READ_BELOW_KIB='lots'"):
        full_read_default()
