"""The night's figures, GOAL lines and report section: pure arithmetic over what bench/night.py
measured (tested without a database, tests/bench/test_night.py)."""

from statistics import mean

from bench.report import Goal

COUNTER = "Innodb_buffer_pool_read_requests"
PHYSICAL = "Innodb_pages_read"
WINDOW_S = 10.0


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals."""
    busy, end = 0.0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
    return busy


def max_window_rate(samples: list, cluster: str, counter: str = COUNTER,
                    window: float = WINDOW_S) -> float:
    """The highest mean rate over any stretch of at least `window` seconds of samples."""
    best = 0.0
    for i, (t0, c0) in enumerate(samples):
        for t1, c1 in samples[i + 1:]:
            if t1 - t0 >= window:
                best = max(best, (c1[cluster][counter] - c0[cluster][counter]) / (t1 - t0))
                break
    return best


def cluster_figures(cluster: str, runs: list[dict], samples: list, naive: dict,
                    budget: int) -> dict:
    mine = [r for r in runs if r["cluster"] == cluster]
    busy = busy_seconds([(r["start_s"], r["end_s"]) for r in mine])
    first, last = samples[0][1][cluster], samples[-1][1][cluster]
    pages = last[COUNTER] - first[COUNTER]
    rate = pages / busy if busy else 0.0
    return {"cluster": cluster, "tenants": len(mine), "busy_s": round(busy, 1),
            "pages": pages, "physical": last[PHYSICAL] - first[PHYSICAL],
            "naive_pages": naive[cluster]["logical"],
            "naive_physical": naive[cluster]["physical"], "naive_rows": naive[cluster]["rows"],
            "budget": budget, "rate": round(rate, 1), "ratio": rate / budget if budget else 0.0,
            "max_window_ratio": max_window_rate(samples, cluster) / budget if budget else 0.0,
            "throttled_s": round(sum(r.get("throttled_s", 0.0) for r in mine), 1),
            "max_threads": max(c[cluster].get("Threads_connected", 0) for _, c in samples)}


def overhead(runs: list[dict]) -> dict:
    """Per tenant: Dagster = run wall - engine; BigQuery = wall with a job outstanding."""
    ok = [r for r in runs if r.get("wall_s")]
    if not ok:
        return {"runs": 0}
    wall = sum(r["wall_s"] for r in ok)
    dag = sum(max(0.0, r["wall_s"] - r["engine_s"]) for r in ok)
    jobs_wall = sum(r["job_wall_s"] for r in ok)
    return {"runs": len(ok), "wall_s": round(wall, 1), "engine_s": round(
        sum(r["engine_s"] for r in ok), 1), "dagster_s": round(dag, 1),
        "job_wall_s": round(jobs_wall, 1), "share": (dag + jobs_wall) / wall if wall else 0.0,
        "dagster_share": dag / wall if wall else 0.0,
        "job_share": jobs_wall / wall if wall else 0.0,
        "mean_wall_s": wall / len(ok), "mean_dagster_s": dag / len(ok),
        "mean_engine_s": mean(r["engine_s"] for r in ok),
        "mean_jobs": mean(r["jobs"] for r in ok), "mean_job_wall_s": jobs_wall / len(ok),
        "mean_job_s_sum": mean(r["job_s_sum"] for r in ok),
        "jobs": sum(r["jobs"] for r in ok), "kinds": kinds_of(ok)}


def kinds_of(runs: list[dict]) -> dict:
    """Jobs by kind (bench/night_run.job_kind) summed over runs, most first."""
    total: dict = {}
    for r in runs:
        for k, n in (r.get("kinds") or {}).items():
            total[k] = total.get(k, 0) + n
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def kinds_sentence(kinds: dict, runs: int) -> str:
    if not kinds or not runs:
        return ""
    return ("Jobs per run by kind: " + ", ".join(f"{k} {n / runs:.1f}" for k, n in kinds.items())
            + ".")


# long: one dict of every figure the goals and the section read; split, it reads worse
def figures_of(*, specs, runs, night0, deadlines, stats, samples, naive, budgets, cust_bad,
               wh_bad, latency, touched, timings, merges=()) -> dict:
    by_tid = {r["tenant"]: r for r in runs}
    missing = [t.tid for t in specs if t.tid not in by_tid]
    failed = sorted([r["tenant"] for r in runs if not r["ok"]] + missing
                    + [f"merge step {i + 1}" for i, m in enumerate(merges) if not m["ok"]])
    late = sorted(tid for tid, d in deadlines.items()
                  if tid not in by_tid or by_tid[tid]["end_s"] > d)
    slack = [d - by_tid[tid]["end_s"] for tid, d in deadlines.items() if tid in by_tid]
    clusters = [cluster_figures(c, runs, samples, naive, budgets[c]) for c in sorted(budgets)]
    pages = sum(c["pages"] for c in clusters)
    naive_pages = sum(c["naive_pages"] for c in clusters)
    ov = overhead(runs)
    by_size = {}
    for size in ("large", "medium", "small"):
        tids = {t.tid for t in specs if t.size == size}
        sub = overhead([r for r in runs if r["tenant"] in tids])
        if sub["runs"]:
            by_size[size] = sub
    errors = stats.get("quota_errors", {})
    tables = stats.get("tables", {})
    fig = {"tenants": len(specs), "shared": sum(t.shared for t in specs),
           "sizes": {s: sum(t.size == s for t in specs) for s in ("large", "medium", "small")},
           "failed": failed, "night0_failed": sorted(r["tenant"] for r in night0 if not r["ok"]),
           "late": late, "min_slack_s": min(slack) if slack else None,
           "clusters": clusters, "pages": pages, "naive_pages": naive_pages,
           "pages_ratio": pages / naive_pages if naive_pages else None,
           "quota_errors": sum(errors.values()), "quota_detail": errors,
           "jobs_total": stats.get("jobs", 0), "queries_total": stats.get("queries", 0),
           "latency_s_total": stats.get("latency_s_total", 0.0),
           "peak_queries_running": stats.get("peak_queries_running", 0),
           "peak_dml_running": max((t["peak_dml_running"] for t in tables.values()), default=0),
           "peak_dml_queued": max((t["peak_dml_queued"] for t in tables.values()), default=0),
           "max_writes_per_table": max((t["writes_today"] for t in tables.values()), default=0),
           "cust_bad": cust_bad, "wh_bad": wh_bad, "latency": latency,
           "night_s": max((r["end_s"] for r in runs), default=0.0),
           "merges": merge_figures(merges),
           "night0_s": max((r["end_s"] for r in night0), default=0.0),
           "rows_touched": sum(touched.values()), "overhead": ov, "by_size": by_size,
           "timings": {k: round(v, 1) for k, v in timings.items()}}
    fig["log_lines"] = log_lines(fig)
    return fig


def merge_figures(merges) -> dict:
    """The merge_warehouse runs of the night: how many, their DML statements on warehouse
    tables (one per table with pending slices), slices merged, jobs, and when the last ended
    (the warehouse complete)."""
    merges = list(merges)
    return {"runs": len(merges), "failed": sum(not m["ok"] for m in merges),
            "dml_statements": sum(int(m.get("dml_statements") or 0) for m in merges),
            "slices": sum(int(m.get("slices_merged") or 0) for m in merges),
            "jobs": sum(int(m.get("jobs") or 0) for m in merges),
            "kinds": kinds_of(merges),
            "wall_s": round(sum(m["wall_s"] for m in merges), 1),
            "last_end_s": max((m["end_s"] for m in merges), default=0.0)}


def merge_sentence(m: dict) -> str:
    return (f"Merge step: {m['runs']} runs, {m['dml_statements']} MERGEs on warehouse tables "
            f"for {m['slices']} pending slices, warehouse complete at {m['last_end_s']:.0f} s.")


def goals(fig: dict) -> list[Goal]:
    ratio = fig["pages_ratio"]
    worst = max(fig["clusters"], key=lambda c: c["ratio"])
    cust = len(fig["cust_bad"])
    return [
        Goal("night-failed-runs", len(fig["failed"]), "<=", 0, "",
             f"{fig['tenants']} nightly runs; failed: {', '.join(fig['failed'][:5]) or 'none'}; "
             f"night 0 (initial loads, not a goal) failed: "
             f"{', '.join(fig['night0_failed'][:5]) or 'none'}"),
        Goal("night-quota-errors", fig["quota_errors"], "<=", 0, "",
             f"strict layer: {fig['quota_detail']}; {fig['jobs_total']:,} jobs, peak DML "
             f"running/queued per table {fig['peak_dml_running']}/{fig['peak_dml_queued']}"),
        Goal("night-deadlines", len(fig["late"]), "<=", 0, "",
             f"tenants late against their scaled deliver_by; least slack "
             f"{fig['min_slack_s'] if fig['min_slack_s'] is None else round(fig['min_slack_s'], 1)}s"),
        Goal("night-budget", worst["ratio"], "<=", 1.10, "x",
             "max over clusters of logical page reads per busy second ÷ budget: "
             + ", ".join(f"{c['cluster']} {c['ratio']:.3f}x of {c['budget']:,}"
                         for c in fig["clusters"])),
        Goal("night-warehouse", len(fig["wh_bad"]), "<=", 0, "",
             f"tenants whose warehouse slice differs from the source (rows, sum of keys, sum of "
             f"amounts, every table); customer datasets differing: {cust}"),
        Goal("night-pages", ratio, "<=", 0.05, "x",
             f"logical page reads of the incremental night {fig['pages']:,} vs the naive night "
             f"(every table read in full) {fig['naive_pages']:,}"),
    ]


def log_lines(fig: dict) -> list[str]:
    ov = fig["overhead"]
    if not ov.get("runs"):
        return ["no run finished"]
    return [f"night {fig['night_s']:.0f}s (night 0 {fig['night0_s']:.0f}s), {ov['runs']} runs, "
            f"{fig['jobs_total']:,} BigQuery jobs",
            f"per run: wall {ov['mean_wall_s']:.2f}s, engine {ov['mean_engine_s']:.2f}s, "
            f"Dagster {ov['mean_dagster_s']:.2f}s, {ov['mean_jobs']:.0f} jobs, "
            f"{ov['mean_job_wall_s']:.2f}s with a job outstanding",
            f"overhead share (Dagster + BigQuery jobs) {ov['share']:.1%} "
            f"(Dagster {ov['dagster_share']:.1%}, jobs {ov['job_share']:.1%})",
            "merge step: {runs} runs ({failed} failed), {dml_statements} MERGEs on warehouse "
            "tables for {slices} pending slices, {jobs} jobs, {wall_s}s; warehouse complete "
            "at {last_end_s:.0f}s".format(**fig["merges"])]


def section(fig: dict) -> tuple[str, str]:
    ov = fig["overhead"]
    lines = ["| cluster | tenants | busy s | pages (logical) | naive pages | ratio | budget "
             "pages/s | measured pages/s | ÷ budget | max 10 s ÷ budget | physical (naive) | "
             "throttled s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in fig["clusters"]:
        lines.append(
            f"| {c['cluster']} | {c['tenants']} | {c['busy_s']:.0f} | {c['pages']:,} | "
            f"{c['naive_pages']:,} | {c['pages'] / max(1, c['naive_pages']):.3f} | "
            f"{c['budget']:,} | {c['rate']:,.0f} | {c['ratio']:.3f} | "
            f"{c['max_window_ratio']:.3f} | {c['physical']:,} ({c['naive_physical']:,}) | "
            f"{c['throttled_s']:.0f} |")
    lines += ["", "| runs | n | mean wall s | mean engine s | mean Dagster s | mean jobs | "
              "mean s with a job outstanding | mean job-seconds |", "|---|---|---|---|---|---|---|---|"]
    for name, o in [("all", ov)] + list(fig["by_size"].items()):
        if o.get("runs"):
            lines.append(f"| {name} | {o['runs']} | {o['mean_wall_s']:.2f} | "
                         f"{o['mean_engine_s']:.2f} | {o['mean_dagster_s']:.2f} | "
                         f"{o['mean_jobs']:.0f} | {o['mean_job_wall_s']:.2f} | "
                         f"{o['mean_job_s_sum']:.2f} |")
    share = (f"Dagster + BigQuery job overhead {ov['share']:.1%} of the runs' total wall time "
             f"(Dagster {ov['dagster_share']:.1%}, time with a job outstanding "
             f"{ov['job_share']:.1%}); at 1 s per job (real BigQuery) the jobs alone would be "
             f"{ov['jobs']:,} job-seconds, {ov['mean_jobs']:.0f} per tenant." if ov.get("runs")
             else "no run finished.")
    if ov.get("runs") and ov.get("kinds"):
        share += " " + kinds_sentence(ov["kinds"], ov["runs"])
        mk = fig["merges"].get("kinds")
        if mk:
            share += " Merge step's jobs: " + ", ".join(f"{k} {n}" for k, n in mk.items()) + "."
    body = ("\n".join(lines) + "\n\n"
            f"{fig['tenants']} tenants ({fig['sizes']}, {fig['shared']} on shared tables), 8 "
            f"tables each; {fig['rows_touched']:,} source rows changed before the night "
            f"({fig.get('changes', 'scattered')} changes); "
            f"strict layer latency {fig['latency']} s per job, time compressed "
            f"{1 / fig['latency'] if fig['latency'] else 1:.0f}x. Night {fig['night_s']:.0f} s, "
            f"{fig['jobs_total']:,} jobs ({fig['queries_total']:,} queries), peak queries "
            f"running {fig['peak_queries_running']}, most writes on one table "
            f"{fig['max_writes_per_table']}. {share} " + merge_sentence(fig["merges"])
            + f" Steps (s): {fig['timings']}. See "
            "bench/night.py for the method.")
    return "8. The night, simulated", body
