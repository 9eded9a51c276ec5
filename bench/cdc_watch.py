"""bench/cdc.py's observers: the poller of the customers' `<table>_live` views (`Watch`), the
CPU of every process over the window (`Machine`), percentiles."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.cdc_load import DEL

PROJECT = "hakobu-cdcb"


def _procs() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, cpu seconds, short name) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        ppid, cpu = int(rest[1]), (int(rest[11]) + int(rest[12])) / tick
        words = [c.decode(errors="replace") for c in cmd if c]
        name = Path(words[0]).name if words else stat[stat.find("(") + 1:stat.rfind(")")]
        if "-m" in words[:-1]:
            name += " -m " + words[words.index("-m") + 1]
        elif "-c" in words[:-1] and name.startswith("python"):
            name += " -c (e.g. a pytest-xdist worker)"
        elif len(words) > 1 and name.startswith("python"):
            name += " " + Path(next((w for w in words[1:] if not w.startswith("-")),
                                    words[1])).name
        out[int(d)] = (ppid, cpu, name)
    return out


class Machine:
    """CPU of our processes and of everyone else's over the measured window."""

    def __init__(self, ours: list[int]):
        self.ours = set(ours)

    def __enter__(self):
        self.t0, self.p0 = time.monotonic(), _procs()
        return self

    def __exit__(self, *exc):
        self.t1, self.p1 = time.monotonic(), _procs()

    def figures(self) -> dict:
        secs = max(1e-6, self.t1 - self.t0)
        ours = set(self.ours)
        changed = True
        while changed:                       # our processes' descendants are ours too
            changed = False
            for pid, (ppid, _, _) in {**self.p0, **self.p1}.items():
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        mine, others = 0.0, {}
        for pid, (_, cpu, name) in self.p1.items():
            d = cpu - self.p0.get(pid, (0, 0.0, ""))[1]
            if d <= 0:
                continue
            if pid in ours:
                mine += d
            else:
                others[name] = others.get(name, 0.0) + d
        other = sum(others.values())
        top = sorted(others.items(), key=lambda kv: -kv[1])[:4]
        return {"seconds": secs, "cores": os.cpu_count(), "ours_cores": mine / secs,
                "others_cores": other / secs,
                "others_top": [(n, round(c / secs, 2)) for n, c in top],
                "bench_others": sorted({n for n in others if "bench." in n}),
                "busy": other / secs > 0.2}



class Watch:
    """Tails the generator's file and polls each table's live view for what it has not seen."""

    def __init__(self, client, tables: list, gen_file: Path, every_s: float = 1.0):
        self.client, self.tables, self.gen_file, self.every_s = client, tables, gen_file, every_s
        self.pending: list[dict[int, list]] = [{} for _ in tables]   # key -> [[kind, ver, t, i]]
        self.deleted: list[set] = [set() for _ in tables]
        self.changes: list[list] = []          # [table, kind, key, ver, committed]
        self.seen: dict[int, float] = {}       # change index -> first seen
        self.rounds: list[tuple[float, float]] = []    # (start, end)
        self.queries = 0
        self.query_s = 0.0
        self._pos = 0
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def tail(self) -> None:
        if not self.gen_file.exists():
            return
        with open(self.gen_file) as f:
            f.seek(self._pos)
            while True:
                line = f.readline()
                if not line or not line.endswith("\n"):
                    break
                self._pos = f.tell()
                txn = json.loads(line)
                for ti, kind, key, ver in txn["c"]:
                    i = len(self.changes)
                    self.changes.append([ti, kind, key, ver, txn["t"]])
                    self.pending[ti].setdefault(key, []).append([kind, ver, txn["t"], i])
                    if kind == DEL:
                        self.deleted[ti].add(key)

    def _query(self, t, keys: list[int]) -> tuple[dict, float]:
        from google.cloud import bigquery

        cfg = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ArrayQueryParameter("ids", "INT64", keys)])
        t0 = time.monotonic()
        rows = self.client.query(f"SELECT id, ver FROM `{PROJECT}.{t.dataset}.{t.table}_live` "
                                 "WHERE id IN UNNEST(@ids)", job_config=cfg).result()
        got = {int(r["id"]): int(r["ver"]) for r in rows}
        at = time.time()
        with self._lock:
            self.queries += 1
            self.query_s += time.monotonic() - t0
        return got, at

    def round(self, pool: ThreadPoolExecutor) -> int:
        """One poll of every table with pending changes; the changes still pending."""
        self.tail()
        t0 = time.time()
        work = [(t, list(self.pending[t.idx])) for t in self.tables if self.pending[t.idx]]
        futs = [(t, keys, pool.submit(self._query, t, keys)) for t, keys in work]
        for t, keys, fut in futs:
            try:
                got, at = fut.result()
            except Exception as exc:     # noqa: BLE001 — counted; the next round asks again
                self.errors.append(f"{t.dataset}.{t.table}: {type(exc).__name__}: {exc}"[:300])
                continue
            pend, deleted = self.pending[t.idx], self.deleted[t.idx]
            for key in keys:
                items = pend.get(key)
                if not items:
                    continue
                cur = got.get(key)
                if cur is None and key in deleted:      # its delete is visible: all of it
                    done = items
                elif cur is None:
                    done = []
                else:
                    done = [c for c in items if c[0] != DEL and c[1] <= cur]
                for c in done:
                    self.seen[c[3]] = at
                rest = [c for c in items if c not in done]
                if rest:
                    pend[key] = rest
                else:
                    pend.pop(key)
        self.rounds.append((t0, time.time()))
        return sum(len(v) for p in self.pending for v in p.values())

    def run(self, until: threading.Event, drain_s: float) -> None:
        """Poll every every_s until `until` is set, then until nothing is pending (the file
        tailed to its end) or drain_s passed."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            drain_end = None
            while True:
                start = time.monotonic()
                done = until.is_set()            # the file is complete before this round
                left = self.round(pool)
                if done:
                    if drain_end is None:
                        drain_end = start + drain_s
                    if left == 0 or time.monotonic() >= drain_end:
                        return
                time.sleep(max(0.0, self.every_s - (time.monotonic() - start)))



def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "p99": pct(values, 99), "max": max(values) if values else None,
            "mean": sum(values) / len(values) if values else None}
