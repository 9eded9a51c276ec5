"""The production stack of deploy/ on this machine, shared by the tests of one module.

PostgreSQL (127.0.0.1:5432, its own database), the real MariaDB and the BigQuery emulator; a
config dir with two source clusters and six tenants, one of them (`tick`) scheduled every minute;
then a gRPC code server, one daemon and the webserver, each in its own session. Everything is
stopped and dropped at the end, also when a test fails.
"""

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hakobu.localenv.demo_data import DemoSchema, create_demo_data
from hakobu.localenv.emulator import free_port
from tests.deploy.stack import BIN, Stack, instance_yaml

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PROJECT = "hakobu-test"
TICK = "tick"   # the tenant whose schedule fires every minute
# tenant -> (cluster, discriminator value in that cluster's shared schema)
TENANTS = {"e1": ("east", 1), "e2": ("east", 2), "e3": ("east", 3),
           "w1": ("west", 1), "w2": ("west", 2), TICK: ("west", 3)}
TABLES = ("members", "plans")


@dataclass
class Deployment:
    stack: Stack
    instance: object          # a DagsterInstance on the same PostgreSQL database (read side)
    config_dir: Path
    datasets: dict[str, str]  # tenant -> dataset id
    schemas: dict[str, str]   # cluster -> MySQL schema
    mysql: object
    bq_client: object
    bq_settings: object
    limits: list[dict]        # tag_concurrency_limits of the instance under test


def _pg_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _write_config(root: Path, schemas: dict[str, str], datasets: dict[str, str]) -> None:
    tdir = root / "tenants"
    tdir.mkdir(parents=True)
    clusters = {name: {"host": "${HAKOBU_MYSQL_HOST}", "port": "${HAKOBU_MYSQL_PORT}",
                       "user": "${HAKOBU_MYSQL_USER}", "timezone": "UTC", "lag_seconds": 1,
                       "read_budget": {"max_connections": 2}}
                for name in schemas}
    (tdir / "clusters.yaml").write_text(yaml.safe_dump({"clusters": clusters}))
    for tenant, (cluster, value) in TENANTS.items():
        body = {
            "tenant": tenant, "cluster": cluster,
            "source": {"schema": schemas[cluster], "tenant_column": "tenant_id",
                       "tenant_value": value},
            "destination": {"project": PROJECT, "dataset": datasets[tenant], "location": "US"},
            # only `tick` fires during the test; the others once a year
            "schedule": {"cron": "* * * * *" if tenant == TICK else "0 3 1 1 *",
                         "timezone": "UTC"},
            "deliver_by": "06:00",
            "tables": [{"name": "members", "cursor": "updated_at", "exclude": ["password_hash"]},
                       {"name": "plans"}],
        }
        (tdir / f"{tenant}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    (root / "permissions.csv").write_text("dataset,role,member\n")


def _observer(home: Path, db: str):
    """An instance for the test process itself, configured by URL (no env, no secret: trust
    auth on loopback), on the database the stack uses."""
    from dagster import DagsterInstance

    home.mkdir(parents=True)
    url = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "storage": {"postgres": {"postgres_url": url}},
        "telemetry": {"enabled": False}}))
    return DagsterInstance.from_config(str(home))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, mysql_server, bq_emulator, bq_client, bq_settings):
    tag = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("deploy")
    db = f"hakobu_dep_test_{tag}"
    schemas = {"east": f"hakobu_dep_{tag}_east", "west": f"hakobu_dep_{tag}_west"}
    datasets = {t: f"dep_{tag}_{t}" for t in TENANTS}

    config_dir = root / "config"
    _write_config(config_dir, schemas, datasets)
    home = root / "dagster_home"
    home.mkdir()
    config = instance_yaml()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _pg_admin(f'CREATE DATABASE "{db}"')

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HAKOBU_", "DAGSTER_", "GOOGLE_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST=PG_HOST, DAGSTER_PG_PORT=str(PG_PORT), DAGSTER_PG_USERNAME=PG_USER,
        DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=db,
        HAKOBU_CODE_SERVER_HOST="127.0.0.1",
        HAKOBU_CONFIG_DIR=str(config_dir),
        HAKOBU_BIGQUERY_ENDPOINT=bq_emulator.url,
        HAKOBU_BIGQUERY_RETRY_DEADLINE="20",
        HAKOBU_MYSQL_HOST=mysql_server.host, HAKOBU_MYSQL_PORT=str(mysql_server.port),
        HAKOBU_MYSQL_USER=mysql_server.user,
        HAKOBU_WORK_DIR=str(root / "work"),
    )
    stack = Stack(root=root, env=env, grpc_port=free_port(), web_port=free_port())
    stack.env["HAKOBU_CODE_SERVER_PORT"] = str(stack.grpc_port)
    instance = None
    try:
        t0 = time.monotonic()
        stack.start_code_server()
        # the source data is written while the code server boots (loading the location reads
        # only the config dir); the daemon, which launches runs, starts after both
        create_demo_data(mysql_server.host, mysql_server.port, mysql_server.user, schemas=[
            DemoSchema(schemas[c], "+00:00", tenant_ids=(1, 2, 3), scale=0.02) for c in schemas])
        stack.wait_code_server()
        stack.start_daemon()
        stack.start_webserver()
        stack.wait_webserver()
        print(f"\nstack up in {time.monotonic() - t0:.1f}s (logs: {root / 'logs'})")
        instance = _observer(root / "observer_home", db)
        yield Deployment(stack=stack, instance=instance, config_dir=config_dir,
                         datasets={t: f"{PROJECT}.{d}" for t, d in datasets.items()},
                         schemas=schemas, mysql=mysql_server, bq_client=bq_client,
                         bq_settings=bq_settings,
                         limits=config["concurrency"]["runs"]["tag_concurrency_limits"])
    finally:
        stack.stop_all()
        if instance is not None:
            instance.dispose()
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        with mysql_server.connect() as conn, conn.cursor() as cur:
            for schema in schemas.values():
                cur.execute(f"DROP DATABASE IF EXISTS `{schema}`")
        for ds in datasets.values():
            bq_client.delete_dataset(f"{PROJECT}.{ds}", delete_contents=True, not_found_ok=True,
                                     retry=bq_settings.retry())
