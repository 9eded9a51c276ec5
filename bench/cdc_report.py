"""bench/cdc.py's figures: the raw observations of one run into latencies, rates and counts;
the GOAL line, the supporting lines and the report's section (pure: no IO but the child's logs)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cdc_load import DEL, KINDS
from bench.cdc_watch import pct, summary
from bench.report import Goal

PROJECT, PREFIX = "hakobu-cdcb", "hk_cdcb_"
TARGET_S = 60.0
MIN_RATE_SHARE = 0.95


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _landed(changes: list[list], appends_file: Path, tables: list) -> tuple:
    """Per change: insertAll return − commit; and the flushes (insertAll calls) themselves."""
    where = {(t.dataset, f"_hakobu_cl_{t.table}"): t.idx for t in tables}
    at: dict[tuple, float] = {}
    calls = _jsonl(appends_file)
    if calls:
        for a in calls:
            ti = where.get((a["ds"], a["table"]))
            if ti is None:
                continue
            for op, key, ver in a["rows"]:
                mark = (ti, key, "D" if op == "delete" else ver)
                at.setdefault(mark, a["t1"])
    out = []
    for ti, kind, key, ver, committed in changes:
        t = at.get((ti, key, "D" if kind == DEL else ver))
        out.append(None if t is None else t - committed)
    return out, calls


def _writes(stats: dict, minus: dict | None = None) -> dict:
    """Table writes by kind of object (the strict layer's counts; less `minus`'s)."""
    out = {"customer tables": 0, "change logs": 0, "checkpoints": 0, "state": 0, "other": 0}
    per = {}
    for name, s in stats["tables"].items():
        if not name.startswith(f"{PROJECT}.{PREFIX}"):
            continue
        table = name.split(".")[-1]
        kind = ("change logs" if table.startswith("_hakobu_cl_") else
                "checkpoints" if table == "_hakobu_rt_checkpoint" else
                "state" if table == "_hakobu_state" else
                "other" if table.startswith("_hakobu") else "customer tables")
        n = s["writes_today"] - ((minus or {}).get("tables", {}).get(name, {})
                                 .get("writes_today", 0))
        out[kind] += n
        if kind == "customer tables":
            per[name.split(".", 1)[1]] = n
    out["per customer table"] = per
    return out


def _flush_rounds(calls: list[dict]) -> list[list[dict]]:
    """The change-log insertAll calls grouped by flush round (calls less than 0.5 s apart)."""
    out: list[list[dict]] = []
    for a in sorted(calls, key=lambda a: a["t0"]):
        if out and a["t0"] - out[-1][-1]["t1"] < 0.5:
            out[-1].append(a)
        else:
            out.append([a])
    return out


# long: one dict of every figure, each a line; split, the names would be scattered
def figures(raw: dict) -> dict:
    """raw: tables, watch, generator, stream, stats_stream, stats_all, mismatches, machine,
    timings, final_merges, live (the stream child's dir), load_started, params."""
    w, tables = raw["watch"], raw["tables"]
    landed, calls = _landed(w.changes, raw["live"] / "appends.jsonl", tables)
    latency = [w.seen[i] - c[4] for i, c in enumerate(w.changes) if i in w.seen]
    by_kind = {name: [w.seen[i] - c[4] for i, c in enumerate(w.changes)
                      if i in w.seen and c[1] == k] for k, (name, _) in enumerate(KINDS)}
    cl_calls = [a for a in calls if a["table"].startswith("_hakobu_cl_")]
    rounds = _flush_rounds(calls)      # a round: every tenant's appends, then its checkpoint
    restart = _jsonl(raw["live"] / "rounds.jsonl")
    loaded_from = raw["load_started"]
    merges = raw["final_merges"]
    intervals = [b[0] - a[0] for a, b in zip(w.rounds, w.rounds[1:])]
    gen = raw["generator"]
    return {
        **raw["params"], "tenants": len({t.tenant for t in tables}), "tables": len(tables),
        "shared_tables": sum(1 for t in tables if t.shop is not None), "generator": gen,
        "rate": gen["changes"] / gen["seconds"] if gen["seconds"] else 0.0,
        "changes": len(w.changes), "seen": len(w.seen), "unseen": len(w.changes) - len(w.seen),
        "kinds": {name: sum(1 for c in w.changes if c[1] == k)
                  for k, (name, _) in enumerate(KINDS)},
        "latency": summary(latency),
        "latency_by_kind": {k: summary(v) for k, v in by_kind.items()},
        "landed": summary([x for x in landed if x is not None]),
        "not_landed": sum(1 for x in landed if x is None),
        "poll": {"rounds": len(w.rounds), "queries": w.queries,
                 "query_s_mean": w.query_s / w.queries if w.queries else None,
                 "interval_p50": pct(intervals, 50), "interval_max": max(intervals or [0]),
                 "errors": w.errors[:5], "error_count": len(w.errors)},
        "insertall": {"calls": len(cl_calls), "flushes": len(rounds),
                      "rows": sum(a["n"] for a in cl_calls),
                      "call_s": summary([a["t1"] - a["t0"] for a in cl_calls]),
                      "flush_s": summary([max(a["t1"] for a in b) - min(a["t0"] for a in b)
                                          for b in rounds]),
                      "checkpoint_calls": sum(1 for a in calls
                                              if a["table"] == "_hakobu_rt_checkpoint")},
        "merge_rounds": {"before_load": [r["t1"] - r["t0"] for r in restart
                                         if r["t1"] <= loaded_from],
                         "during_load": [r["t1"] - r["t0"] for r in restart
                                         if r["t1"] > loaded_from],
                         "merges_per_round": max((r["merges"] for r in restart), default=0)},
        "stream": raw["stream"],
        "writes_streaming": _writes(raw["stats_stream"]),
        "writes_final_merge": _writes(raw["stats_all"], minus=raw["stats_stream"]),
        "jobs_streaming": raw["stats_stream"]["jobs"],
        "quota_errors": raw["stats_all"]["quota_errors"],
        "merges": {"n": len(merges), "s": summary([m["t1"] - m["t0"] for m in merges]),
                   "rows": raw["final_rows"]},
        "mismatches": raw["mismatches"], "machine": raw["machine"], "timings": raw["timings"]}


def _f(x, unit="s", nd=2) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}{unit}"


def goal(m: dict) -> Goal:
    lat, rate_ok = m["latency"], m["rate"] >= MIN_RATE_SHARE * m["rate_target"]
    mc = m["machine"]
    busy = ("machine busy: other processes used "
            f"{mc['others_cores']:.2f} of {mc['cores']} cores" if mc["busy"] else "machine quiet")
    note = (f"p50 {_f(lat['p50'])}, p95 {_f(lat['p95'])}, max {_f(lat['max'])} from commit to "
            f"visible in `<table>_live`; {m['changes']:,} changes at {m['rate']:.0f}/s "
            f"(target {m['rate_target']:.0f}/s) over {m['tables']} tables of {m['tenants']} "
            f"tenants, unseen {m['unseen']}; {busy}")
    why = []
    if m["unseen"]:
        why.append(f"{m['unseen']} change(s) never seen")
    if not rate_ok:
        why.append(f"the generator reached {m['rate']:.0f}/s < {MIN_RATE_SHARE:.0%} of "
                   f"{m['rate_target']:.0f}/s")
    if m["mismatches"]:
        why.append(f"{len(m['mismatches'])} merged table(s) differ from the source")
    if not m["seen"]:
        why.append("nothing seen")
    if why:
        return Goal("cdc-latency", None, "<=", TARGET_S, "s", "; ".join(why) + "; " + note)
    return Goal("cdc-latency", lat["p95"], "<=", TARGET_S, "s", note)


def lines(m: dict) -> list[str]:
    """The supporting lines (stderr, and the report's section)."""
    lat, ld, ins, mc = m["latency"], m["landed"], m["insertall"], m["machine"]
    w, wf, mr = m["writes_streaming"], m["writes_final_merge"], m["merge_rounds"]
    kinds = ", ".join(f"{k} {v:,}" for k, v in m["kinds"].items())
    bk = "; ".join(f"{k} p50 {_f(v['p50'])} p95 {_f(v['p95'])}"
                   for k, v in m["latency_by_kind"].items())
    others = ", ".join(f"{n} {c}" for n, c in mc["others_top"]) or "none"
    return [
        f"changes {m['changes']:,} ({kinds}) at {m['rate']:.1f}/s for "
        f"{m['generator']['seconds']:.1f}s (target {m['rate_target']:.0f}/s, "
        f"{m['generator']['threads']} generator threads); seen {m['seen']:,}, unseen "
        f"{m['unseen']}",
        f"visible in <table>_live − commit: p50 {_f(lat['p50'])}, p95 {_f(lat['p95'])}, "
        f"p99 {_f(lat['p99'])}, max {_f(lat['max'])} ({bk})",
        f"landed in the change log (insertAll returned) − commit: p50 {_f(ld['p50'])}, p95 "
        f"{_f(ld['p95'])}, max {_f(ld['max'])}; {m['not_landed']} not matched",
        f"insertAll: {ins['calls']:,} calls, {ins['rows']:,} rows, per call p50 "
        f"{_f(ins['call_s']['p50'], 's', 3)} p95 {_f(ins['call_s']['p95'], 's', 3)}; per "
        f"flush round p50 {_f(ins['flush_s']['p50'], 's', 3)} max "
        f"{_f(ins['flush_s']['max'], 's', 3)}; checkpoint appends {ins['checkpoint_calls']:,}",
        f"poll: {m['poll']['rounds']:,} rounds (interval p50 {_f(m['poll']['interval_p50'])}, "
        f"max {_f(m['poll']['interval_max'])}), {m['poll']['queries']:,} live-view queries "
        f"of {_f(m['poll']['query_s_mean'], 's', 3)} mean, {m['poll']['error_count']} failed",
        f"BigQuery table writes while streaming (strict layer, job latency "
        f"{m['job_latency_s']}s): customer tables {w['customer tables']}, change logs "
        f"{w['change logs']}, checkpoints {w['checkpoints']}, state {w['state']}; "
        f"{m['jobs_streaming']} jobs in all during the load (the poller's queries go to the emulator directly)",
        f"merge rounds of the stream loop (every table of every tenant, then each tenant's "
        f"state; no flush meanwhile): {_f(mr['before_load'][0] if mr['before_load'] else None, 's', 1)} "
        f"for the warm-up round ({mr['merges_per_round']} MERGEs, before the load)"
        if mr["before_load"] else
        f"merge rounds of the stream loop (every table of every tenant, then each tenant's "
        f"state; no flush meanwhile): the restart's first round fell in the load (no warm-up): "
        f"{', '.join(_f(x, 's', 1) for x in mr['during_load'])}",
        f"final catch-up (snapshot-style `--once` in the bench's process): {m['merges']['n']} "
        f"MERGEs ({m['merges']['rows']:,} rows, p50 {_f(m['merges']['s']['p50'])}, max "
        f"{_f(m['merges']['s']['max'])} each); its writes: customer tables "
        f"{wf['customer tables']}, change logs {wf['change logs']}, state {wf['state']}; quota "
        f"errors {sum(m['quota_errors'].values())}; merged tables differing from the source: "
        f"{len(m['mismatches'])}"
        + (f" ({'; '.join(m['mismatches'][:3])})" if m["mismatches"] else ""),
        f"machine during the load ({mc['seconds']:.0f}s): {'BUSY' if mc['busy'] else 'quiet'} — "
        f"this bench {mc['ours_cores']:.2f} cores, other processes {mc['others_cores']:.2f} "
        f"of {mc['cores']} ({others})"
        + (f"; other benchmarks running: {', '.join(mc['bench_others'])}"
           if mc["bench_others"] else ""),
        "timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in m["timings"].items()),
    ]


def section(m: dict) -> tuple[str, str]:
    body = ("`bench/cdc.py` (method in its docstring and in the analysis): a private "
            "binlog MariaDB, the emulator behind the strict layer, "
            f"{m['tenants']} tenants / {m['tables']} realtime tables ({m['shared_tables']} on a "
            f"shared table), `hakobu stream` (the CLI, its own process, defaults: flush every "
            f"2 s, merge every 10 min) while a generator commits {m['rate_target']:.0f} "
            f"changes/s for {m['seconds']:.0f} s; each change's first appearance in "
            "`<table>_live` polled every second.\n\n"
            + "\n".join(f"- {ln}" for ln in lines(m)))
    return "9. Realtime: change latency (issue #15)", body


