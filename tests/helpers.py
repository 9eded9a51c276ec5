"""Helpers for tests: config directories and source schemas that tests create and drop."""

import textwrap
import uuid
from pathlib import Path

import pymysql


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def fresh_schema(sql, prefix: str):
    """A fixture body: a fresh utf8mb4 source schema `<prefix>_<random>`, dropped afterwards."""
    name = unique(prefix)
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    sql(f"DROP DATABASE IF EXISTS `{name}`")


def fresh_dataset(bq_client, prefix: str):
    """A fixture body: a BigQuery dataset name `<prefix>_<random>`, deleted afterwards."""
    name = unique(prefix)
    yield name
    bq_client.delete_dataset(f"hakobu-test.{name}", delete_contents=True, not_found_ok=True)


def dataset_factory(bq_client, prefix: str):
    """A fixture body: a factory of dataset names (`make(prefix=...)`), each deleted afterwards."""
    made: list[str] = []

    def make(p: str = prefix) -> str:
        made.append(unique(p))
        return made[-1]

    yield make
    for name in made:
        bq_client.delete_dataset(f"hakobu-test.{name}", delete_contents=True, not_found_ok=True)


def write_config(root: Path, server, tenants: dict[str, str], *, lag: int = 0,
                 timezone: str = "UTC", cluster_extra: str = "",
                 permissions: str = "dataset,role,member\n") -> Path:
    """A config dir with one cluster `main` on the test server and the given tenant bodies
    (YAML text without the `tenant:`/`cluster:` lines)."""
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    (root / "tenants" / "clusters.yaml").write_text(textwrap.dedent(f"""\
        clusters:
          main:
            host: {server.host}
            port: {server.port}
            user: {server.user}
            timezone: {timezone}
            lag_seconds: {lag}
        """) + textwrap.indent(textwrap.dedent(cluster_extra), "    "))
    for tid, body in tenants.items():
        (root / "tenants" / f"{tid}.yaml").write_text(
            f"tenant: {tid}\ncluster: main\n" + textwrap.dedent(body))
    (root / "permissions.csv").write_text(permissions)
    return root


def tenant_body(schema: str, dataset: str, tables: str, source_extra: str = "") -> str:
    return (f"source:\n  schema: {schema}\n{source_extra}"
            f"destination:\n  project: hakobu-test\n  dataset: {dataset}\n  location: US\n"
            f"schedule:\n  cron: '0 2 * * *'\n  timezone: UTC\n"
            f"deliver_by: '06:00'\ntables:\n{textwrap.indent(textwrap.dedent(tables), '  ')}")


class Sql:
    """A tiny autocommit pymysql wrapper for test fixtures (utf8mb4, UTC session)."""

    def __init__(self, server, tz: str = "+00:00"):
        self.conn = pymysql.connect(host=server.host, port=server.port, user=server.user,
                                    password="", charset="utf8mb4", autocommit=True,
                                    init_command=f"SET time_zone = '{tz}'")

    def __call__(self, sql: str, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def many(self, sql: str, rows):
        with self.conn.cursor() as cur:
            cur.executemany(sql, rows)

    def close(self):
        self.conn.close()
