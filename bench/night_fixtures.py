"""The simulated night's fleet: tenants, their tenant files, their source rows, a night's changes.

Pure parts (tested without a database): `layout` (which tenant lives where, how large, when it
starts and when it is due) and `write_config` (tenants/clusters.yaml, warehouse.yaml and one
tenant file per tenant, read back by hakobu.config like any other config directory).

Source parts: three private MariaDB servers started through hakobu.localenv (one per source
cluster, so each cluster's read governor sees only its own server's counters), on ports
3421-3423 when free, data under .local/bench/night/<cluster>; the rows are generated
server-side (SEQUENCE engine) and recorded in `hakobu_night_meta._fixtures`, so a second run
reuses them (earlier nights' changes stay: each bench run is one more night for the fleet).
"""

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql
import yaml

from hakobu.localenv.mariadb import MySQLServer, start_private

FIXTURE_VERSION = 1
META = "hakobu_night_meta"
PREFIX = "hakobu_night"
PROJECT = "hakobu-night"
WAREHOUSE_DATASET = "night_dwh"
CLUSTERS = ("night-c1", "night-c2", "night-c3")
PORTS = {"night-c1": 3421, "night-c2": 3422, "night-c3": 3423}
# tables with a cursor, and the fraction of the tenant's row count each holds
TABLES = {"members": 1.0, "orders": 1.0, "items": 0.5, "payments": 0.5, "events": 0.25,
          "sessions": 0.25, "tickets": 0.1}
LOOKUP, LOOKUP_ROWS = "plans", 20          # no cursor: read in full every night (small)
SIZES = {"large": 100_000, "medium": 5_000, "small": 300}
NIGHT_S = 6 * 3600                          # the real night: 00:00 to 06:00


@dataclass(frozen=True)
class NightTenant:
    tid: str
    cluster: str
    size: str                 # large | medium | small
    rows: int                 # rows of its largest tables (TABLES scales the others)
    schema: str
    org: int | None           # shared tables: the tenant's org_id; None: its own schema
    start_s: int              # real-night start, seconds after 00:00 (its cron)
    deadline_s: int           # real-night deliver_by, seconds after 00:00

    @property
    def shared(self) -> bool:
        return self.org is not None

    def table_rows(self, table: str) -> int:
        return LOOKUP_ROWS if table == LOOKUP else max(20, int(self.rows * TABLES[table]))


def layout(n: int, large_rows: int | None = None) -> list[NightTenant]:
    """n tenants round-robin over the three clusters; 1 % large (at least 1), 10 % medium, the
    rest small; every third tenant of a cluster on its shared schema (never a large one).
    Large tenants start at 00:30 and are due at 05:00, the others start between 01:00 and 02:45
    (every 15 min) and are due at 06:00 or 05:30."""
    n_large = max(1, round(n * 0.01))
    n_medium = max(1, round(n * 0.10)) if n > 2 else 0
    out = []
    for i in range(n):
        size = "large" if i < n_large else "medium" if i < n_large + n_medium else "small"
        cluster = CLUSTERS[i % len(CLUSTERS)]
        tid = f"n{i:03d}"
        shared = size != "large" and (i // len(CLUSTERS)) % 3 == 2
        schema = f"{PREFIX}_{cluster[-2:]}_shared" if shared else f"{PREFIX}_{tid}"
        rows = (large_rows or SIZES["large"]) if size == "large" else SIZES[size]
        if size == "large":
            start, deadline = 1800, 5 * 3600
        else:
            start = 3600 + (i % 8) * 900
            deadline = 6 * 3600 if i % 2 else 5 * 3600 + 1800
        out.append(NightTenant(tid, cluster, size, rows, schema, i + 1 if shared else None,
                               start, deadline))
    return out


def table_names() -> list[str]:
    return [*TABLES, LOOKUP]


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def tenant_file(t: NightTenant) -> dict:
    source: dict = {"schema": t.schema}
    if t.shared:
        source.update(tenant_column="org_id", tenant_value=t.org)
    tables = [{"name": name, "cursor": "updated_at"} for name in TABLES]
    tables.append({"name": LOOKUP})
    return {"tenant": t.tid, "cluster": t.cluster, "source": source,
            "destination": {"project": PROJECT, "dataset": f"night_{t.tid}", "location": "US"},
            "schedule": {"cron": f"{t.start_s % 3600 // 60} {t.start_s // 3600} * * *",
                         "timezone": "UTC"},
            "deliver_by": _hhmm(t.deadline_s), "tables": tables}


def write_config(root: Path, tenants: list[NightTenant], ports: dict[str, int],
                 budgets: dict[str, int], counter: str, max_connections: int = 2) -> Path:
    """A config directory (tenants/ + an empty permissions.csv) for hakobu.config.load_config."""
    tdir = Path(root) / "tenants"
    tdir.mkdir(parents=True, exist_ok=True)
    clusters = {c: {"host": "127.0.0.1", "port": ports[c], "user": "root", "timezone": "UTC",
                    "lag_seconds": 1,
                    "read_budget": {"pages_per_second": budgets[c], "counter": counter,
                                    "max_connections": max_connections}}
                for c in sorted({t.cluster for t in tenants})}
    (tdir / "clusters.yaml").write_text(yaml.safe_dump({"clusters": clusters}, sort_keys=True))
    (tdir / "warehouse.yaml").write_text(yaml.safe_dump({"warehouse": {
        "project": PROJECT, "dataset": WAREHOUSE_DATASET, "location": "US", "enabled": True,
        "hash_key_env": "HAKOBU_WAREHOUSE_HASH_KEY", "drop_columns": [],
        "hash_columns": ["email"]}}))
    for t in tenants:
        (tdir / f"{t.tid}.yaml").write_text(yaml.safe_dump(tenant_file(t), sort_keys=False))
    (Path(root) / "permissions.csv").write_text("dataset,role,member\n")
    return Path(root)


# --- the servers ----------------------------------------------------------------------------

def start_servers(base: Path, clusters=CLUSTERS) -> dict[str, MySQLServer]:
    """One private MariaDB per cluster (reused when already running from an earlier run)."""
    out = {}
    for c in clusters:
        state = Path(base) / c
        state.mkdir(parents=True, exist_ok=True)
        if not (state / "port").exists():
            (state / "port").write_text(f"{PORTS[c]}\n")    # start_private reuses it if free
        out[c] = start_private(state)
    return out


def connect(server: MySQLServer, database: str | None = None):
    return pymysql.connect(host=server.host, port=server.port, user=server.user, password="",
                           database=database, charset="utf8mb4", autocommit=True,
                           read_timeout=3600, write_timeout=3600)


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _ddl(ref: str, shared: bool, if_not_exists: bool = False) -> str:
    org = "org_id INT NOT NULL, " if shared else ""
    key = "PRIMARY KEY (org_id, id), INDEX ix_cursor (org_id, updated_at)" if shared else \
        "PRIMARY KEY (id), INDEX ix_cursor (updated_at)"
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return (f"{create} {ref} ({org}id BIGINT NOT NULL, updated_at DATETIME(6) NOT NULL, "
            "account_id INT NOT NULL, status TINYINT NOT NULL, amount DECIMAL(12,2) NOT NULL, "
            "email VARCHAR(128) NOT NULL, note VARCHAR(200), "
            f"{key}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")


def _fill_sql(ref: str, org: int | None, lo: int, hi: int) -> str:
    """Rows lo..hi, every value a function of the key; updated_at in the past, rising with id."""
    org_col = f"{int(org)}, " if org is not None else ""
    return (f"INSERT INTO {ref} SELECT {org_col}seq, TIMESTAMP('2024-01-01') + INTERVAL seq "
            "SECOND + INTERVAL MOD(seq * 7919, 1000000) MICROSECOND, (seq * 40503) % 100000, "
            "seq % 5, ((seq * 7717) % 1000000) / 100, "
            "CONCAT(LEFT(MD5(seq), 10), '@example.com'), "
            f"CONCAT(SHA2(seq, 256), ' ', LEFT(MD5(seq + 1), 8 + seq % 24)) FROM seq_{lo}_to_{hi}")


def _built(cur) -> set[str]:
    cur.execute(f"CREATE DATABASE IF NOT EXISTS {q(META)}")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {q(META)}._fixtures (name VARCHAR(128) PRIMARY KEY,"
                " nrows BIGINT NOT NULL, version INT NOT NULL, built_at DATETIME NOT NULL)")
    cur.execute(f"SELECT name, nrows FROM {q(META)}._fixtures WHERE version = %s",
                (FIXTURE_VERSION,))
    return {f"{name}:{n}" for name, n in cur.fetchall()}


def seed(server: MySQLServer, tenants: list[NightTenant], log=print) -> int:
    """Build every table of these tenants that the fixture record does not list; returns the
    number built. A shared table holds one org's rows per fixture record."""
    conn = connect(server)
    built = 0
    try:
        with conn.cursor() as cur:
            have = _built(cur)
            for t in tenants:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {q(t.schema)} CHARACTER SET utf8mb4")
                cur.execute(f"USE {q(t.schema)}")        # seq_1_to_N resolves in the schema
                for name in table_names():
                    key = f"{t.schema}.{name}" + (f"#{t.org}" if t.shared else "")
                    n = t.table_rows(name)
                    if f"{key}:{n}" in have:
                        continue
                    _build_one(cur, t, name, n)
                    cur.execute(f"REPLACE INTO {q(META)}._fixtures VALUES (%s, %s, %s, NOW())",
                                (key, n, FIXTURE_VERSION))
                    built += 1
    finally:
        conn.close()
    if built:
        log(f"  night: built {built} tables on :{server.port}")
    return built


def _build_one(cur, t: NightTenant, name: str, n: int) -> None:
    ref = f"{q(t.schema)}.{q(name)}"
    if t.shared:
        cur.execute(_ddl(ref, True, if_not_exists=True))
        cur.execute(f"DELETE FROM {ref} WHERE org_id = %s", (t.org,))
    else:
        cur.execute(f"DROP TABLE IF EXISTS {ref}")
        cur.execute(_ddl(ref, False))
    cur.execute(_fill_sql(ref, t.org, 1, n))


def changed_fraction(tid: str, table: str, night: int) -> float:
    """0.5-2 % of rows, a stable function of tenant, table and night."""
    h = (sum(map(ord, f"{tid}/{table}/{night}")) * 2654435761) % 1000
    return 0.005 + 0.015 * h / 999


RECENT_SHARE = 10        # "recent" changes: within the newest 1/RECENT_SHARE of the keys


def changes_mode() -> str:
    """HAKOBU_NIGHT_CHANGES (`--night-changes`): `recent` (default; the night's updates among
    the newest tenth of each table's keys) or `scattered` (uniform over all keys: with ~96
    rows a page and 0.66 % changed, ~47 % of the pages hold a change, so no reader, however
    incremental, can read less than ~0.47x of a full scan)."""
    mode = os.environ.get("HAKOBU_NIGHT_CHANGES", "recent")
    if mode not in ("recent", "scattered"):
        raise ValueError(f"HAKOBU_NIGHT_CHANGES={mode!r}: choose recent or scattered")
    return mode


def change_sql(t: NightTenant, table: str, night: int) -> list[tuple[str, tuple]]:
    """One night's writes on one table: updates (bumping updated_at; `changes_mode`), a few
    inserts past the largest key, a few deletes. (sql, args) pairs."""
    ref = f"{q(t.schema)}.{q(table)}"
    scope, args = ("org_id = %s AND ", (t.org,)) if t.shared else ("", ())
    if table == LOOKUP:
        return [(f"UPDATE {ref} SET amount = amount + 1 WHERE {scope}id = %s",
                 args + (night % LOOKUP_ROWS + 1,))]
    per_mille = max(1, round(changed_fraction(t.tid, table, night) * 1000))
    n = t.table_rows(table)
    extra = max(1, math.ceil(n * per_mille / 1000 / 10))
    org_col = f"{int(t.org)}, " if t.shared else ""
    if changes_mode() == "recent":
        # the same number of updated rows, drawn from the newest tenth of the keys (what a
        # SaaS's reservations, payments, check-ins do: last week's rows change, not 2019's)
        window = max(1, n // RECENT_SHARE)
        update = (f"UPDATE {ref} SET updated_at = NOW(6), amount = amount + 1, "
                  f"status = MOD(status + 1, 5) WHERE {scope}id > (SELECT m FROM (SELECT "
                  f"COALESCE(MAX(id), 0) - {window} AS m FROM {ref} WHERE {scope}1) w) "
                  "AND MOD(id * 7919 + %s, 1000) < %s",
                  args + args + (night * 37, min(1000, per_mille * RECENT_SHARE)))
    else:
        update = (f"UPDATE {ref} SET updated_at = NOW(6), amount = amount + 1, "
                  f"status = MOD(status + 1, 5) WHERE {scope}MOD(id * 7919 + %s, 1000) < %s",
                  args + (night * 37, per_mille))
    return [
        update,
        (f"DELETE FROM {ref} WHERE {scope}MOD(id * 104729 + %s, 10000) = 0 LIMIT %s",
         args + (night * 13, extra)),
        (f"INSERT INTO {ref} SELECT {org_col}m + seq, NOW(6), seq, 1, seq / 100, "
         "CONCAT('new', m + seq, '@example.com'), 'inserted tonight' FROM "
         f"(SELECT COALESCE(MAX(id), 0) AS m FROM {ref} WHERE {scope}1) x, seq_1_to_{extra}",
         args),
    ]


def apply_changes(server: MySQLServer, tenants: list[NightTenant], night: int) -> int:
    """Apply one night's changes to these tenants' tables; returns rows touched."""
    conn = connect(server)
    touched = 0
    try:
        with conn.cursor() as cur:
            for t in tenants:
                cur.execute(f"USE {q(t.schema)}")
                for name in table_names():
                    for sql, args in change_sql(t, name, night):
                        touched += cur.execute(sql, args)
    finally:
        conn.close()
    return touched


def source_digests(server: MySQLServer, tenants: list[NightTenant]) -> dict:
    """(tenant, table) -> (rows, sum of id, sum of amount) on the source: what each delivered
    table must hold after the night."""
    out = {}
    conn = connect(server)
    try:
        with conn.cursor() as cur:
            for t in tenants:
                scope, args = ("WHERE org_id = %s", (t.org,)) if t.shared else ("", ())
                for name in table_names():
                    cur.execute(f"SELECT COUNT(*), COALESCE(SUM(id), 0), COALESCE(SUM(amount), 0)"
                                f" FROM {q(t.schema)}.{q(name)} {scope}", args)
                    n, ids, amount = cur.fetchone()
                    out[(t.tid, name)] = (int(n), int(ids), str(amount))
    finally:
        conn.close()
    return out


def full_copy_read(server: MySQLServer, tenants: list[NightTenant]) -> int:
    """The naive night on one server: every table of every tenant read in full, streamed to
    the client and dropped (what a generic ELT copy reads: `SELECT *`, the tenant's rows of a
    shared table by its key prefix). Returns rows read."""
    conn = pymysql.connect(host=server.host, port=server.port, user=server.user, password="",
                           charset="utf8mb4", cursorclass=pymysql.cursors.SSCursor,
                           read_timeout=3600)
    rows = 0
    try:
        with conn.cursor() as cur:
            for t in tenants:
                scope, args = ("WHERE org_id = %s", (t.org,)) if t.shared else ("", ())
                for name in table_names():
                    cur.execute(f"SELECT * FROM {q(t.schema)}.{q(name)} {scope}", args)
                    while batch := cur.fetchmany(5000):
                        rows += len(batch)
    finally:
        conn.close()
    return rows


def server_counters(server: MySQLServer) -> dict[str, int]:
    conn = connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_pages_read', "
                        "'Innodb_buffer_pool_read_requests', 'Threads_connected')")
            return {k: int(v) for k, v in cur.fetchall()}
    finally:
        conn.close()


def settle(server: MySQLServer, quiet_s: float = 2.0, timeout_s: float = 120.0) -> int:
    """Wait until the server's own work stops moving the page counter (it is server-wide: the
    purge of a night's changes and InnoDB's statistics recalculation read pages that would count
    as the next night's — the naive night of one cluster counted 6x its twin's once): purge to
    the end (MariaDB's innodb_max_purge_lag_wait = 0 returns when the history is purged), then
    `quiet_s` without a change. Returns the pages counted while waiting."""
    conn = connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL innodb_max_purge_lag_wait = 0")
    finally:
        conn.close()
    first = last = server_counters(server)["Innodb_buffer_pool_read_requests"]
    now = time.monotonic()
    end, quiet_from = now + timeout_s, now
    while time.monotonic() < end and time.monotonic() - quiet_from < quiet_s:
        time.sleep(0.5)
        value = server_counters(server)["Innodb_buffer_pool_read_requests"]
        if value != last:
            last, quiet_from = value, time.monotonic()
    return last - first
