"""bench/cdc.py's two child processes (`python -m bench.cdc_load ...`):

    --load SPEC.json                the load generator: threads over their own tables, each on
                                    its own connection, paced to a fixed schedule; one line per
                                    committed transaction (its commit time and its changes'
                                    markers) to the spec's file, a summary JSON on stdout
    --stream-child DIR -- ARGS...   `hakobu stream ARGS` (hakobu.cli.main, the production entry
                                    point) with timing wrappers only: every insertAll's rows and
                                    return time (DIR/appends.jsonl), every MERGE
                                    (DIR/merges.jsonl), every merge round of the stream loop
                                    (DIR/rounds.jsonl), and DIR/ready / DIR/streaming at its
                                    first / second flush round (the second: after the first
                                    round's merges, which a restarted stream runs at once)
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path

KINDS = (("insert", 0.40), ("update", 0.45), ("delete", 0.15))
INS, UPD, DEL = 0, 1, 2


def _gen_thread(spec: dict, mine: list[dict], rate: float, out, lock, t_start: float,
                t_end: float, counts: list, errors: list, rnd: random.Random) -> None:
    import pymysql

    conn = pymysql.connect(host=spec["host"], port=spec["port"], user=spec["user"], password="",
                           charset="utf8mb4", autocommit=False)
    live = [{} for _ in mine]                 # key -> ver, per table of this thread
    deletable = [list(range(t["seed_lo"], t["seed_lo"] + t["seed"])) for t in mine]
    for i, t in enumerate(mine):
        live[i] = dict.fromkeys(deletable[i], 1)
        rnd.shuffle(deletable[i])
    nxt = [t["next_id"] for t in mine]
    keys = [list(live[i]) for i in range(len(mine))]   # a list to pick updates from
    due = t_start
    n = 0
    try:
        with conn.cursor() as cur:
            while True:
                now = time.time()
                if now >= t_end:
                    break
                if due > now:
                    time.sleep(due - now)
                i = rnd.randrange(len(mine))
                t = mine[i]
                ref = f"`{t['schema']}`.`{t['table']}`"
                size = rnd.randint(1, 4)
                done = []
                for _ in range(size):
                    r = rnd.random()
                    kind = INS if r < KINDS[0][1] else UPD if r < KINDS[0][1] + KINDS[1][1] \
                        else DEL
                    if kind == DEL and not deletable[i]:
                        kind = UPD
                    if kind == UPD and not keys[i]:
                        kind = INS
                    if kind == INS:
                        k, v = nxt[i], 1
                        nxt[i] += 1
                        shop = (t["shop"],) if t["shop"] is not None else ()
                        cur.execute(f"INSERT INTO {ref} ({'shop, ' if shop else ''}id, ver, "
                                    f"amount, note, updated_at) VALUES ({'%s, ' if shop else ''}"
                                    "%s, 1, %s, 'new', NOW(6))", (*shop, k, k % 1000))
                        live[i][k] = 1
                        keys[i].append(k)
                    elif kind == UPD:
                        j = rnd.randrange(len(keys[i]))
                        k = keys[i][j]
                        if k not in live[i]:          # deleted meanwhile: drop it from the list
                            keys[i][j] = keys[i][-1]
                            keys[i].pop()
                            continue
                        v = live[i][k] + 1
                        live[i][k] = v
                        cur.execute(f"UPDATE {ref} SET ver = %s, amount = amount + 1, "
                                    "updated_at = NOW(6) WHERE id = %s"
                                    + (" AND shop = %s" if t["shop"] is not None else ""),
                                    (v, k) + ((t["shop"],) if t["shop"] is not None else ()))
                    else:
                        k = deletable[i].pop()
                        if k not in live[i]:
                            continue
                        v = live[i].pop(k)
                        cur.execute(f"DELETE FROM {ref} WHERE id = %s"
                                    + (" AND shop = %s" if t["shop"] is not None else ""),
                                    (k,) + ((t["shop"],) if t["shop"] is not None else ()))
                    done.append([t["idx"], kind, k, v])
                conn.commit()
                at = time.time()
                if done:
                    with lock:
                        out.write(json.dumps({"t": at, "c": done}) + "\n")
                    n += len(done)
                due += max(1, len(done)) / rate
    except Exception as exc:     # noqa: BLE001 — reported by the generator's summary
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
        counts.append(n)


def load_main(spec_path: str) -> None:
    """The generator: spec JSON in, one line per committed transaction to spec['out'] (tailed
    by the parent), a summary JSON line on stdout at the end."""
    spec = json.loads(Path(spec_path).read_text())
    tables, threads = spec["tables"], max(1, min(spec["threads"], len(spec["tables"])))
    parts = [tables[i::threads] for i in range(threads)]
    lock, counts, errors = threading.Lock(), [], []
    t_start = time.time() + 0.2
    t_end = t_start + spec["seconds"]
    with open(spec["out"], "w", buffering=1) as out:
        stop = threading.Event()

        def flusher():
            while not stop.wait(0.2):
                with lock:
                    out.flush()
        fl = threading.Thread(target=flusher, daemon=True)
        fl.start()
        ws = [threading.Thread(target=_gen_thread, args=(
            spec, p, spec["rate"] * len(p) / len(tables), out, lock, t_start, t_end, counts,
            errors, random.Random(spec["seed"] + k))) for k, p in enumerate(parts)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        stop.set()
        fl.join()
    took = time.time() - t_start
    print(json.dumps({"changes": sum(counts), "seconds": took, "planned_s": spec["seconds"],
                      "threads": threads, "errors": errors}), flush=True)


# -- the stream (the CLI in its own process, timed) ------------------------------------------

def stream_main(outdir: str, argv: list[str]) -> int:
    """`hakobu stream ARGV` with two timing wrappers: every insertAll's rows and return time
    (appends.jsonl), merge durations (merges.jsonl), a ready file at the first flush round."""
    from hakobu.cli import main   # late: only this child runs the CLI
    from hakobu.stream import ClusterStream   # late: as above
    from resources.changelog import RealtimeDataset   # late: as above

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    appends = open(out / "appends.jsonl", "a", buffering=1)
    merges = open(out / "merges.jsonl", "a", buffering=1)
    rounds = open(out / "rounds.jsonl", "a", buffering=1)
    lock = threading.Lock()
    orig_append, orig_merge = RealtimeDataset.append, RealtimeDataset.merge
    orig_flush, orig_merge_due = ClusterStream._flush, ClusterStream._merge_due

    def append(self, table, rows, row_ids):
        t0 = time.time()
        n = orig_append(self, table, rows, row_ids)
        t1 = time.time()
        marks = [[r.get("_hakobu_op"), r.get("id"), r.get("ver")] for r in rows] \
            if table.startswith("_hakobu_cl_") else []
        with lock:
            appends.write(json.dumps({"t0": t0, "t1": t1, "ds": self.dest.dataset,
                                      "table": table, "n": len(rows), "rows": marks}) + "\n")
        return n

    def merge(self, bq_table, *a, **kw):
        t0 = time.time()
        n = orig_merge(self, bq_table, *a, **kw)
        with lock:
            merges.write(json.dumps({"t0": t0, "t1": time.time(), "ds": self.dest.dataset,
                                     "table": bq_table, "rows": n}) + "\n")
        return n

    calls = []

    def flush(self, *args, **kwargs):
        calls.append(time.time())
        if len(calls) <= 2:
            (out / ("ready" if len(calls) == 1 else "streaming")).write_text(str(calls[-1]))
        return orig_flush(self, *args, **kwargs)

    def merge_due(self, force=False):
        t0 = time.time()
        before = sum(t.merges for ts in self.tenants.values() for t in ts.tables.values())
        orig_merge_due(self, force)
        n = sum(t.merges for ts in self.tenants.values() for t in ts.tables.values()) - before
        if n:
            with lock:
                rounds.write(json.dumps({"t0": t0, "t1": time.time(), "merges": n}) + "\n")

    RealtimeDataset.append, RealtimeDataset.merge = append, merge
    ClusterStream._flush, ClusterStream._merge_due = flush, merge_due
    try:
        return main(["stream", *argv])
    finally:
        for f in (appends, merges, rounds):
            f.close()




def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--load"]:
        load_main(argv[1])
        return 0
    if argv[:1] == ["--stream-child"]:
        rest = argv[2:]
        return stream_main(argv[1], rest[1:] if rest[:1] == ["--"] else rest)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
