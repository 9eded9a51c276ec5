"""`hakobu validate`: the files, the code location built from them, each table on its source."""

import json
import re
import sys

import pymysql

from hakobu.binlog_health import SNAPSHOT_S
from hakobu.cli.common import EXIT_FAIL, EXIT_OK
from hakobu.config import Config, load_config
from hakobu.errors import ConfigError, HakobuError
from hakobu.grants.csvfile import load_rows
from hakobu.ports import IO
from hakobu.sqlquote import mysql_literal
from hakobu.planning import plan_for
from pipelines.build import definition_problems
from resources import binlog_server
from resources.dagster import open_io


def cmd_validate(args) -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "problems": [str(e) for e in
                                                    getattr(exc, "errors", [exc])]}, indent=2))
        return EXIT_FAIL
    problems: list[str] = []
    try:
        load_rows(config)
    except ConfigError as exc:
        problems.append(str(exc))
    tables = sum(len(t.tables) for t in config.tenants.values())
    problems += definition_problems(config)     # what would stop the code location loading
    if not args.offline:
        with open_io() as io:
            problems += check_sources(config, io)
    where = "files only" if args.offline else "files and sources"
    if args.json:
        print(json.dumps({"ok": not problems, "checked": where, "root": str(config.root),
                          "tenants": len(config.tenants), "tables": tables,
                          "clusters": len(config.clusters), "problems": problems}, indent=2))
        return EXIT_FAIL if problems else EXIT_OK
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_FAIL
    print(f"OK: {len(config.tenants)} tenants, {tables} tables, {len(config.clusters)} clusters "
          f"({where}) in {config.root}")
    return EXIT_OK


def check_sources(config: Config, io: IO) -> list[str]:
    """Reflect every declared table on its cluster: unknown tables/columns, missing keys and
    indexes, types hakobu cannot deliver, tenant values of another type than their column,
    tenants whose values the column's collation takes for one. Each problem names the file and
    line it is about. Nothing is read or written."""
    out = []
    for tenant in config.tenants.values():
        try:
            source = io.source(config.cluster_of(tenant))
            source.ping()
        except HakobuError as exc:
            out.append(f"{config.where(tenant.tenant, 'cluster')}: tenant {tenant.tenant}: {exc}")
            continue
        for table in tenant.tables:
            try:
                plan_for(source, tenant, table)
            except HakobuError as exc:
                key = getattr(exc, "config_key", None)
                at = (config.where(tenant.tenant, *key) if key and key[0] == "source"
                      else config.table_where(tenant.tenant, table.name, key and key[-1]))
                out.append(f"{at}: {exc}")
    out += collation_collisions(config, io)
    out += binlog_guards(config)
    return out


def binlog_guards(config: Config) -> list[str]:
    """The binlog health guard of `hakobu stream` on every cluster with realtime tables (a
    snapshot of an hour assumed, as `hakobu stream`'s default): what to set, before a stream
    is started and refused."""
    out = []
    for name in sorted({t.cluster for t in config.tenants.values() if t.realtime_tables}):
        tenants = sorted(t.tenant for t in config.tenants.values()
                         if t.cluster == name and t.realtime_tables)
        try:
            binlog_server.on_cluster(config.clusters[name], binlog_server.ensure_ready,
                                     SNAPSHOT_S)
        except HakobuError as exc:
            out.append(f"{config.where(tenants[0], 'cluster')}: cluster {name!r} (the "
                       f"`delivery: realtime` tables of {', '.join(tenants)}): {exc}")
        except pymysql.err.Error as exc:
            out.append(f"{config.where(tenants[0], 'cluster')}: cluster {name!r}: its binlog "
                       f"settings could not be read: {exc}")
    return out


def collation_collisions(config: Config, io: IO) -> list[str]:
    """Tenants of one shared table whose string tenant_values differ as written but are equal
    under the tenant column's collation ('café' and 'cafe' under utf8mb4_general_ci; 'ß' and
    'ss' under unicode_ci): the application takes them for one tenant, so their rows would be
    delivered to either dataset. The server compares them, in the column's own collation."""
    groups: dict[tuple, list] = {}
    for t in config.tenants.values():
        if t.source.shared and isinstance(t.source.tenant_value, str):
            c = config.cluster_of(t)
            key = (c.host.lower(), c.port, t.source.schema_.lower(),
                   t.source.tenant_column.lower())
            groups.setdefault(key, []).append(t)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0]
        tables = sorted({x.name for m in members for x in m.tables})
        try:
            source = io.source(config.cluster_of(first))
            rows = source.query(
                "SELECT TABLE_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM "
                "information_schema.COLUMNS WHERE TABLE_SCHEMA = :s AND COLUMN_NAME = :c",
                {"s": first.source.schema_, "c": first.source.tenant_column})
        except HakobuError as exc:
            out.append(f"{config.where(first.tenant, 'source')}: {exc}")
            continue
        reported: set[tuple[str, str]] = set()
        for table, charset, collation in rows:
            if table not in tables or not charset or not re.fullmatch(r"\w+", collation + charset):
                continue
            vals = [f"SELECT {i} AS i, CONVERT({mysql_literal(m.source.tenant_value)} USING "
                    f"{charset}) COLLATE {collation} AS v" for i, m in enumerate(members)]
            union = " UNION ALL ".join(vals)
            pairs = source.query(f"WITH x AS ({union}) SELECT a.i, b.i FROM x a JOIN x b "
                                 "ON a.i < b.i AND a.v = b.v")
            for i, j in pairs:
                a, b = members[i], members[j]
                if (a.tenant, b.tenant) in reported:
                    continue
                reported.add((a.tenant, b.tenant))
                out.append(
                    f"{config.where(b.tenant, 'source', 'tenant_value')}: source.tenant_value: "
                    f"tenants {a.tenant!r} ({a.file}) and {b.tenant!r} read the same rows of "
                    f"{first.source.schema_}.{table}: {a.source.tenant_value!r} and "
                    f"{b.source.tenant_value!r} are equal under the tenant column's collation "
                    f"{collation} — give each tenant a value of its own")
    return out
