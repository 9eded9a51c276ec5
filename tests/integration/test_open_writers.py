"""Open write transactions and the upper bound, on a private MariaDB whose system time zone is
Asia/Tokyo (started and stopped here, so no other session on a shared server can hold or free a
bound while a test waits on it).

- numeric cursors (a version counter, DECIMAL, an AUTO_INCREMENT id): a value held uncommitted
  below one that commits is delivered once it commits, never passed by the watermark;
- INNODB_TRX.trx_started is in the server's system zone: an open transaction holds a DATETIME
  cursor's bound on a non-UTC server too.

Each test changes existing rows and compares delivered content; every transaction a test opens
is closed in `finally`."""

import datetime as dt
import shutil
import threading
import time

import pytest

from hakobu.config import load_config
from hakobu.planning import plan_for
from hakobu.reconcile import diff_table
from resources.bigquery_client import BigQuerySettings
from tests.helpers import Sql, fresh_dataset, fresh_schema, tenant_body, unique, write_config
from tests.live import destination_for, source_for, sync_tenant


@pytest.fixture(scope="module")
def tokyo(tmp_path_factory):
    from hakobu.localenv.mariadb import start_private

    state = tmp_path_factory.mktemp("hk_cur_tokyo")
    server = start_private(state / "mariadb", system_timezone="Asia/Tokyo")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def tk(tokyo):
    s = Sql(tokyo)
    yield s
    s.close()


@pytest.fixture
def tk_schema(tk):
    yield from fresh_schema(tk, "hk_cur")


@pytest.fixture
def tk_dataset(bq_client):
    yield from fresh_dataset(bq_client, "hk_cur")


@pytest.fixture
def tk_config(tmp_path, tokyo, tk_schema, tk_dataset, monkeypatch, bq_env):
    def make(tables: str, **kw):
        root = write_config(tmp_path / unique("cfg"), tokyo,
                            {"a": tenant_body(tk_schema, tk_dataset, tables)},
                            timezone="Asia/Tokyo", lag=0, **kw)
        monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
        return load_config(root)
    return make


def run(config):
    return {r.table: r for r in sync_tenant(config, "a")}


def diff(config, table):
    t = config.tenant("a")
    source = source_for(config, t)
    plan = plan_for(source, t, t.table(table))
    return diff_table(source, destination_for(t, BigQuerySettings.from_env()), plan)


class Writer:
    """A second session that keeps a transaction open until commit() (or rollback at the end)."""

    def __init__(self, server, tz: str = "SYSTEM"):
        self.sql = Sql(server, tz=tz)
        self.sql("SET autocommit = 0")
        self.sql("START TRANSACTION")
        self.open = True

    def __call__(self, statement, args=None):
        return self.sql(statement, args)

    def commit(self):
        if self.open:
            self.sql("COMMIT")
            self.open = False

    def close(self):
        try:
            if self.open:
                self.sql("ROLLBACK")
        finally:
            self.sql.close()


# -- 1. numeric cursors and open transactions ---------------------------------------------------

KINDS = {
    # kind: (DDL, initial rows, table entry, A's uncommitted write, B's committed write)
    "version": ("CREATE TABLE {s}.items (id INT PRIMARY KEY, version BIGINT NOT NULL, "
                "note VARCHAR(20), INDEX ix_v (version))",
                "INSERT INTO {s}.items SELECT seq, seq * 10, 'v1' FROM {s}.seq_1_to_10",
                "- name: items\n  cursor: version\n  chunk_rows: 3\n",
                "UPDATE {s}.items SET version = 101, note = 'A' WHERE id = 3",
                "UPDATE {s}.items SET version = 102, note = 'B' WHERE id = 4"),
    "decimal": ("CREATE TABLE {s}.items (id INT PRIMARY KEY, version DECIMAL(12,2) NOT NULL, "
                "note VARCHAR(20), INDEX ix_v (version))",
                "INSERT INTO {s}.items SELECT seq, seq, 'v1' FROM {s}.seq_1_to_10",
                "- name: items\n  cursor: version\n  chunk_rows: 3\n",
                "UPDATE {s}.items SET version = 10.25, note = 'A' WHERE id = 3",
                "UPDATE {s}.items SET version = 10.50, note = 'B' WHERE id = 4"),
    "autoinc": ("CREATE TABLE {s}.items (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                "note VARCHAR(20))",
                "INSERT INTO {s}.items (note) SELECT 'v1' FROM {s}.seq_1_to_10",
                "- name: items\n  cursor: id\n  chunk_rows: 3\n",
                "INSERT INTO {s}.items (note) VALUES ('A')",       # gets id 11
                "INSERT INTO {s}.items (note) VALUES ('B')"),      # gets id 12, commits first
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_numeric_cursor_value_committed_late_is_delivered(tokyo, tk, tk_schema, tk_config,
                                                          monkeypatch, kind):
    """A holds a lower cursor value uncommitted while B commits a higher one: the watermark used
    to pass A's value (MAX + 1), and A's row was never delivered. Now the bound waits for the
    writers open when MAX was read, and holds while A stays open."""
    import hakobu.table_checks as hs

    ddl, rows, table, write_a, write_b = (x.format(s=f"`{tk_schema}`") for x in KINDS[kind])
    if kind == "autoinc":
        # A brand-new row: the key reconcile after the run would merge it back and hide a read
        # that skipped it. Off here, so the read itself is what is tested.
        monkeypatch.setattr(hs, "RECONCILE", False)
    monkeypatch.setenv("HAKOBU_WRITER_WAIT_SECONDS", "1")
    tk(ddl)
    tk(rows)
    config = tk_config(table)
    assert run(config)["items"].ok
    a = Writer(tokyo)
    try:
        a(write_a)
        tk(write_b)                                   # commits above A's uncommitted value
        r = run(config)["items"]
        assert r.ok, r.error
        a.commit()
        r2 = run(config)["items"]
        assert r2.ok, r2.error
        d = diff(config, "items")
        assert d.equal, d.summary() + f" missing={d.missing} different={d.different}"
        # while A was open, the bound stayed where the first run left it
        assert r.bound.get("held_by_trx_ids"), r.bound
        assert r2.bound["upper_basis"] == "max+open-writers-finished", r2.bound
    finally:
        a.close()
    notes = dict(tk(f"SELECT id, note FROM `{tk_schema}`.items"))
    assert "A" in notes.values()


def test_decimal_bound_admits_nothing_newer_than_the_max(tokyo, tk, tk_schema, tk_config,
                                                         monkeypatch):
    """`MAX + 1` on DECIMAL(12,2) (10.00 → 11.00) admitted values allocated after MAX was read:
    if 10.50 commits while 10.25 is still open, the read takes 10.50 and the watermark passes
    10.25. The bound is now the next value of the type (10.01). A and B act between the bound
    and the read, through a wrapper around the real upper_bound."""
    from resources.mysql_source import MySQLSource

    ddl, rows, table, _, _ = (x.format(s=f"`{tk_schema}`") for x in KINDS["decimal"])
    tk(ddl)
    tk(rows)
    config = tk_config(table)
    assert run(config)["items"].ok
    a = Writer(tokyo)
    real = MySQLSource.upper_bound
    acted = []

    def upper_bound(self, plan, *args, **kw):
        out = real(self, plan, *args, **kw)
        if not acted:
            acted.append(out)
            a(f"UPDATE `{tk_schema}`.items SET version = 10.25, note = 'A' WHERE id = 3")
            tk(f"UPDATE `{tk_schema}`.items SET version = 10.50, note = 'B' WHERE id = 4")
        return out

    monkeypatch.setattr(MySQLSource, "upper_bound", upper_bound)
    try:
        assert run(config)["items"].ok
        a.commit()
        assert run(config)["items"].ok
        d = diff(config, "items")
        assert d.equal, d.summary() + f" different={d.different}"
        assert str(acted[0][0]) == "10.01", acted
    finally:
        a.close()


def test_writer_that_finishes_within_the_wait_does_not_hold(tokyo, tk, tk_schema, tk_config,
                                                            monkeypatch):
    """The bound waits for the writers that were open when MAX was read (usually milliseconds):
    A commits 0.7 s into the run, and both rows arrive in that same run."""
    monkeypatch.setenv("HAKOBU_WRITER_WAIT_SECONDS", "20")
    ddl, rows, table, write_a, write_b = (x.format(s=f"`{tk_schema}`") for x in KINDS["version"])
    tk(ddl)
    tk(rows)
    config = tk_config(table)
    assert run(config)["items"].ok
    a = Writer(tokyo)
    timer = None
    try:
        a(write_a)
        tk(write_b)
        timer = threading.Timer(0.7, a.commit)
        timer.start()
        t0 = time.monotonic()
        r = run(config)["items"]
        assert r.ok, r.error
        timer.join()
        d = diff(config, "items")
        assert d.equal, d.summary() + f" different={d.different}"
        assert r.bound["upper_basis"] == "max+open-writers-finished", r.bound
        assert r.rows_read == 2 and time.monotonic() - t0 >= 0.6
    finally:
        if timer is not None:
            timer.join()
        a.close()


# -- 2. the open-transaction guard in the server's clock ------------------------------------------

ORDERS = "- name: orders\n  cursor: updated_at\n  chunk_rows: 4\n"


def test_open_transaction_holds_the_bound_on_a_non_utc_server(tokyo, tk, tk_schema, tk_config):
    """On a JST server, trx_started of an open transaction is JST civil time; read as UTC it
    was 9 h in the future, so it never held the bound: a row it stamped, committed after a run
    had passed its stamp, was lost. Rows are stamped by the server (NOW() in the session's
    default zone, SYSTEM = JST), as the cluster's `timezone: Asia/Tokyo` declares."""
    tk(f"CREATE TABLE `{tk_schema}`.orders (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
       "note VARCHAR(20), INDEX ix_u (updated_at))")
    app = Sql(tokyo, tz="SYSTEM")
    try:
        app(f"INSERT INTO `{tk_schema}`.orders SELECT seq, NOW(6) - INTERVAL 1 HOUR, 'v1' "
            f"FROM `{tk_schema}`.seq_1_to_8")
        config = tk_config(ORDERS)
        assert run(config)["orders"].ok
        before = dt.datetime.now(dt.timezone.utc)
        a = Writer(tokyo)
        try:
            a(f"UPDATE `{tk_schema}`.orders SET updated_at = NOW(6), note = 'late' WHERE id = 1")
            time.sleep(2.5)
            app(f"UPDATE `{tk_schema}`.orders SET updated_at = NOW(6), note = 'other' "
                "WHERE id = 2")
            time.sleep(0.2)
            r = run(config)["orders"]
            assert r.ok, r.error
            a.commit()
        finally:
            a.close()
        time.sleep(0.2)
        assert run(config)["orders"].ok
        d = diff(config, "orders")
        assert d.equal, d.summary() + f" different={d.different}"
        held = dt.datetime.fromisoformat(r.bound["held_by_open_transaction_since"])
        assert abs((held - before).total_seconds()) < 3, (held, before)
        assert r.rows_read == 0           # row 2 (stamped after A began) waited with row 1
    finally:
        app.close()


def test_system_zone_conversion_never_places_a_start_late(tmp_path, tokyo):
    """The conversion of trx_started (system-zone civil time) to UTC, on the JST server and on
    a New York one (DST): exact where the civil time is unique; in the repeated hour of a
    fall-back the earlier reading (never later than the truth)."""
    from hakobu.localenv.mariadb import start_private
    from resources.mysql_bound import system_to_utc_sql

    def utc(server, civil: str):
        s = Sql(server)
        try:
            [(v,)] = s(f"SELECT {system_to_utc_sql(repr(civil))}")
            return v
        finally:
            s.close()

    assert utc(tokyo, "2026-01-01 09:00:00") == dt.datetime(2026, 1, 1, 0, 0)
    ny = start_private(tmp_path / "ny", system_timezone="America/New_York")
    try:
        assert utc(ny, "2025-07-01 12:00:00") == dt.datetime(2025, 7, 1, 16, 0)    # EDT
        assert utc(ny, "2025-12-01 12:00:00") == dt.datetime(2025, 12, 1, 17, 0)   # EST
        # 01:30 on 2025-11-02 happened at 05:30Z (EDT) and 06:30Z (EST): the earlier one
        assert utc(ny, "2025-11-02 01:30:00") == dt.datetime(2025, 11, 2, 5, 30)
        # 02:30 EST (07:30Z) is unique, but read an hour early at worst, never late
        assert dt.datetime(2025, 11, 2, 6, 30) <= utc(ny, "2025-11-02 02:30:00") \
            <= dt.datetime(2025, 11, 2, 7, 30)
        assert utc(ny, "2025-11-02 03:00:00") == dt.datetime(2025, 11, 2, 8, 0)
    finally:
        ny.stop()
        shutil.rmtree(tmp_path / "ny", ignore_errors=True)


def test_backfill_refuses_to_swap_while_a_numeric_bound_is_held(tokyo, tk, tk_schema, tk_config,
                                                                monkeypatch, bq_client):
    """A backfill reads the whole table below the bound and swaps it in: under a bound held by
    an open writer the swap would hide every row changed since the last delivery. It refuses
    (transient, retried) and leaves the table as it was; once the writer is done it succeeds."""
    import hakobu.results as hs
    from tests.live import backfill_tenant

    monkeypatch.setenv("HAKOBU_WRITER_WAIT_SECONDS", "0.3")
    monkeypatch.setattr(hs, "RETRY_BASE_S", 0.01)
    ddl, rows, table, write_a, write_b = (x.format(s=f"`{tk_schema}`") for x in KINDS["version"])
    tk(ddl)
    tk(rows)
    config = tk_config(table)
    assert run(config)["items"].ok
    a = Writer(tokyo)
    try:
        a(write_a)
        tk(write_b)
        [r] = backfill_tenant(config, "a")
        assert not r.ok and "still open" in r.error and "nothing was swapped" in r.error
        ds = config.tenant("a").destination.dataset
        got = dict(bq_client.query(f"SELECT id, note FROM `hakobu-test.{ds}.items`").result())
        assert len(got) == 10 and got[4] == "v1"              # untouched, row 4 still there
        a.commit()
    finally:
        a.close()
    [r] = backfill_tenant(config, "a")
    assert r.ok, r.error
    d = diff(config, "items")
    assert d.equal, d.summary() + f" different={d.different}"


def test_first_load_under_an_open_writer_reads_nothing_through_the_cursor(tokyo, tk, tk_schema,
                                                                         tk_config, monkeypatch):
    """No watermark to hold at: a first load while an older writer is open reads no row through
    the cursor (NULL-cursor rows still arrive) and writes no watermark; the next run loads."""
    monkeypatch.setenv("HAKOBU_WRITER_WAIT_SECONDS", "0.3")
    ddl, rows, table, write_a, _ = (x.format(s=f"`{tk_schema}`") for x in KINDS["version"])
    tk(ddl.replace("version BIGINT NOT NULL", "version BIGINT NULL"))
    tk(rows)
    tk(f"UPDATE `{tk_schema}`.items SET version = NULL WHERE id = 10")
    config = tk_config(table)
    a = Writer(tokyo)
    try:
        a(write_a)
        r = run(config)["items"]
        assert r.ok, r.error
        assert r.bound["upper_bound"] == "nothing (held)" and r.rows_read == 1, r
        a.commit()
    finally:
        a.close()
    r = run(config)["items"]
    assert r.ok and r.mode == "initial", r
    d = diff(config, "items")
    assert d.equal, d.summary() + f" different={d.different}"


# -- 3. many sessions polling INNODB_TRX at once -----------------------------------------------

def test_many_pollers_each_get_a_fresh_listing(tokyo, tk, tk_schema):
    """INNODB_TRX is refilled only after 100 ms without a reader: eight sources polling on one
    server kept it stale for one another on a fixed beat (SourceUnavailable after 5 s in the
    test suite's parallel part). With random back-off every poll ends with a listing made
    after it began — which shows the one open writer."""
    from hakobu.config.models import Cluster
    from resources.mysql_source import MySQLSource

    tk(f"CREATE TABLE `{tk_schema}`.w (id INT PRIMARY KEY, v INT)")
    tk(f"INSERT INTO `{tk_schema}`.w VALUES (1, 1)")
    writer = Writer(tokyo)
    sources = [MySQLSource(Cluster(name=f"poll{i}", host=tokyo.host, port=tokyo.port,
                                   user="root")) for i in range(8)]
    got, errors = {}, []

    def poll(i):
        try:
            got[i] = [sources[i]._open_writers() for _ in range(3)]
        except Exception as exc:    # noqa: BLE001 — asserted below
            errors.append(f"{i}: {exc}")

    try:
        writer(f"UPDATE `{tk_schema}`.w SET v = 2 WHERE id = 1")
        threads = [threading.Thread(target=poll, args=(i,)) for i in range(len(sources))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        writer.close()
        for s in sources:
            s.dispose()
    assert not errors, errors
    assert sorted(got) == list(range(8))
    assert all(len(listing) == 1 for lists in got.values() for listing in lists), got
