"""Read pressure: how many chunk reads may run at once on a source cluster, and how fast.

`ReadGovernor.slot()` wraps every chunk read. This module holds the interface and the
in-process limit (max_connections from the cluster's read budget); the feedback loop that paces
reads from the server's own counters lives beside it (see resources/governor.py once present).
"""

import contextlib
import threading
import time
from collections import defaultdict

from hakobu.config import Cluster


class ReadGovernor:
    def __init__(self, name: str, max_connections: int | None):
        self.name = name
        self._sem = threading.BoundedSemaphore(max_connections) if max_connections else None
        self._throttled: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    @classmethod
    def unlimited(cls) -> "ReadGovernor":
        return cls("unlimited", None)

    @contextlib.contextmanager
    def slot(self, tenant: str = "", table: str = ""):
        """Hold one read slot for the duration of a chunk read."""
        t0 = time.monotonic()
        if self._sem is not None:
            self._sem.acquire()
        waited = time.monotonic() - t0
        if waited > 0.001:
            with self._lock:
                self._throttled[(tenant, table)] += waited
        try:
            yield
        finally:
            if self._sem is not None:
                self._sem.release()

    def throttled_seconds(self, tenant: str, table: str) -> float:
        with self._lock:
            return self._throttled.get((tenant, table), 0.0)


_governors: dict = {}
_lock = threading.Lock()


def governor_for(cluster: Cluster) -> ReadGovernor:
    """One governor per cluster and process, shared by every tenant on that cluster."""
    with _lock:
        key = (cluster.name, cluster.host, cluster.port, cluster.read_budget)
        gov = _governors.get(key)
        if gov is None:
            gov = ReadGovernor(cluster.name, cluster.read_budget.max_connections)
            _governors[key] = gov
        return gov
