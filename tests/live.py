"""The integration tier's IO: the engine's entry points with the real adapters (resources.io.LiveIO)
configured from the environment the fixtures set (the emulator behind tests/bq_live.py, the
test MariaDB), so a test reads like the code it drives: `sync_tenant(config, "a")`.

One LiveIO per BigQuery endpoint for the test session: sources (connection pools) and
governors are shared by the tests of a session as one Dagster resource shares them across
runs — each test's clusters have their own names, hence their own sources and budgets."""

from resources.bigquery_client import BigQuerySettings
from resources.io import LiveIO

_io: dict = {}


def live_io(settings: BigQuerySettings | None = None) -> LiveIO:
    settings = settings or BigQuerySettings.from_env()
    if settings not in _io:
        _io[settings] = LiveIO(settings)
    return _io[settings]


def sync_tenant(config, tenant_id, *, io=None, settings=None, **kw):
    from hakobu.sync import sync_tenant as run

    return run(config, tenant_id, io=io or live_io(settings), **kw)


def backfill_tenant(config, tenant_id, *, io=None, settings=None, **kw):
    from hakobu.backfill import backfill_tenant as run

    return run(config, tenant_id, io=io or live_io(settings), **kw)


def source_for(config, tenant):
    return live_io().source(config.cluster_of(tenant))


def destination_for(tenant, settings=None):
    return live_io(settings).customer(tenant)


def verify_tenant(config, tenant_id, *, io=None, settings=None, **kw):
    from hakobu.verify_run import verify_tenant as run

    return run(config, tenant_id, io=io or live_io(settings), **kw)
