"""The fast unit tier: the engine on fakes (tests/fakes), no server, no emulator."""

import textwrap

import pytest

from hakobu.config import load_config
from tests.fakes.io import FakeIO
from tests.fakes.source import ScriptedSource


@pytest.fixture
def fake_source():
    return ScriptedSource()


@pytest.fixture
def fake_io(fake_source):
    return FakeIO(fake_source)


@pytest.fixture
def make_config(tmp_path):
    """A config dir with one cluster `fake` and tenants given as {id: (schema, dataset, tables
    YAML[, source extra YAML])}."""
    def make(tenants: dict, cluster_extra: str = ""):
        root = tmp_path / "cfg"
        (root / "tenants").mkdir(parents=True, exist_ok=True)
        (root / "tenants" / "clusters.yaml").write_text(
            "clusters:\n  fake:\n    host: fake\n    port: 1\n    user: fake\n"
            "    timezone: UTC\n    lag_seconds: 0\n" + textwrap.indent(cluster_extra, "    "))
        for tid, (schema, dataset, tables, *extra) in tenants.items():
            (root / "tenants" / f"{tid}.yaml").write_text(
                f"tenant: {tid}\ncluster: fake\nsource:\n  schema: {schema}\n"
                + (extra[0] if extra else "")
                + f"destination:\n  project: unit-proj\n  dataset: {dataset}\n  location: US\n"
                "schedule:\n  cron: '0 2 * * *'\n  timezone: UTC\ndeliver_by: '06:00'\n"
                "tables:\n" + textwrap.indent(textwrap.dedent(tables), "  "))
        (root / "permissions.csv").write_text("dataset,role,member\n")
        return load_config(root)
    return make


@pytest.fixture(autouse=True)
def _no_checks_without_fakes(monkeypatch):
    """Key reconcile and content verification need the verification ports' fakes
    (tests/fakes/checks.py); without them the tier tests delivery alone."""
    try:
        import tests.fakes.checks  # noqa: F401
    except ImportError:
        import hakobu.table_checks as tc

        monkeypatch.setattr(tc, "RECONCILE", False)
        monkeypatch.setattr(tc, "VERIFY_CONTENT", False)
