"""One `hakobu stream` per tenant at a time (issue #15): a MySQL named lock per tenant on its
source cluster, held by one connection of the stream's process for its lifetime. The server
frees a lock when its connection ends, so a killed stream never leaves a claim behind; a
`--recover` (or a second service) started beside a running stream is refused, naming the
connection that holds it. The guarded merge (RealtimeDataset.merge's version) still covers
what a lock cannot: a stream cut off from MySQL while its BigQuery merge is in flight."""

from __future__ import annotations

import hashlib
import time

import pymysql

from hakobu.config import Cluster
from hakobu.errors import HakobuError
from resources.binlog_server import connect

IDLE_TIMEOUT_S = 31_536_000           # the lock's connection idles between pings: a year
PING_EVERY_S = 30.0                   # keep() asks the server at most this often


def lock_name(tenant: str) -> str:
    """The named lock of a tenant's stream (MySQL allows 64 characters)."""
    name = f"hakobu:stream:{tenant}"
    return name if len(name) <= 64 else f"hakobu:stream:{hashlib.sha1(tenant.encode()).hexdigest()}"


class StreamClaim:
    """The locks of `tenants` on `cluster`, taken at once (HakobuError when one is held)."""

    def __init__(self, cluster: Cluster, tenants: list[str]):
        self.cluster, self.tenants = cluster, list(tenants)
        self._conn = None
        self._pinged = time.monotonic()
        self._take()

    def _take(self) -> None:
        c = self.cluster
        conn = connect(c)
        try:
            cur = conn.cursor()
            cur.execute(f"SET SESSION wait_timeout = {IDLE_TIMEOUT_S}")
            for tenant in self.tenants:
                cur.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", (lock_name(tenant),) * 2)
                got, holder = cur.fetchone()
                if got != 1:
                    raise HakobuError(
                        f"another `hakobu stream` is streaming tenant {tenant!r} on cluster "
                        f"{c.name!r} (MySQL connection {holder} holds the lock "
                        f"{lock_name(tenant)!r})", tenant=tenant,
                        hint="stop that stream first (SIGTERM), then rerun this command: one "
                             "stream per tenant at a time (`--tenants` limits a stream to some "
                             "of the cluster's tenants)")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def keep(self) -> None:
        """A claim whose connection was lost (the server restarted) is taken again, or this
        raises: another stream may have taken a tenant meanwhile. At most every PING_EVERY_S
        (the stream calls it every flush round)."""
        if time.monotonic() - self._pinged < PING_EVERY_S:
            return
        self._pinged = time.monotonic()
        try:
            self._conn.ping(reconnect=False)
        except pymysql.err.Error:
            self._take()

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.err.Error:
                pass
            self._conn = None
