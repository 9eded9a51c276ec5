"""The benchmark harness runs end to end on a tiny table and writes its report (no timings
are checked: timing goals live in `make bench`, not in tests)."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench.fixtures import Server, drop_schema_family
from bench.report import (GOAL_LINE, Goal, Report, from_json, parse_goal_lines, render, to_json,
                          write)

REPO = Path(__file__).resolve().parents[2]
GOALS = {"extract-vs-connectorx", "extract-vs-pandas", "memory-flat", "memory-peak",
         "budget-compliance", "incremental-cost"}


def test_goal_lines_and_report_render(tmp_path):
    report = Report(mode="quick", machine={"nproc": 2, "memory": "1.0 GiB", "mariadb": "10.11.x",
                                           "buffer_pool": "128 MiB"})
    report.goals += [Goal("extract-vs-connectorx", 0.93, ">=", 0.9, "x", "a note"),
                     Goal("memory-peak", 312.4, "<", 300, "MiB"),
                     Goal("budget-compliance", None, "<=", 1.1, "x", "not implemented")]
    report.fact("a figure", "1.0x")
    report.section("Something", "| a |\n|---|\n| 1 |")
    lines = [g.line() for g in report.goals]
    assert lines == [
        "GOAL extract-vs-connectorx measured=0.93x target=>=0.9x PASS",
        "GOAL memory-peak measured=312MiB target=<300MiB MISS",
        "GOAL budget-compliance measured=n/a target=<=1.1x MISS (not implemented)",
    ]
    path = write(report, tmp_path / "sub" / "BENCHMARKS.md")
    text = path.read_text()
    assert text == render(report)
    for needle in ("## Machine", "2 cores", "1.0 GiB memory", "MariaDB 10.11.x",
                   "buffer pool 128 MiB", "| `memory-peak` | 312MiB | < 300MiB | **MISS** |",
                   "## Something", "| a figure | 1.0x |", lines[0]):
        assert needle in text
    assert [g["name"] for g in parse_goal_lines(text)] == [g.name for g in report.goals]
    assert not list(tmp_path.glob("sub/*.tmp"))
    assert render(from_json(to_json(report))) == text     # --render-only reproduces the report


@pytest.mark.timeout(120)
def test_quick_run_prints_goal_lines_and_writes_report(mysql_server, tmp_path):
    schema = f"hakobu_bench_t{uuid.uuid4().hex[:8]}"
    out = tmp_path / "BENCHMARKS.md"
    env = dict(os.environ, HAKOBU_MYSQL_HOST=mysql_server.host,
               HAKOBU_MYSQL_PORT=str(mysql_server.port), HAKOBU_MYSQL_USER=mysql_server.user)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.run_all", "--quick", "--rows", "3000",
             "--schema", schema, "--out", str(out),
             "--only", "throughput,memory,budget,incremental"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=110)
    finally:
        drop_schema_family(Server(mysql_server.host, mysql_server.port, mysql_server.user),
                           schema)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines and all(GOAL_LINE.match(ln) for ln in lines), proc.stdout
    goals = {g["name"]: g for g in parse_goal_lines(proc.stdout)}
    assert set(goals) == GOALS
    # every measured goal was measured (only the governor's goal is a stub)
    for name, g in goals.items():
        assert (g["measured"] == "n/a") == (name == "budget-compliance"), (name, proc.stderr[-3000:])
    text = out.read_text()
    assert "quick mode" in text and "## Machine" in text
    for ln in lines:
        assert ln in text
    assert "1. Extraction throughput (3,000 rows" in text
    assert "4. Incremental cost" in text
    # --render-only rewrites the report from the run's JSON without measuring
    out.write_text("stale")
    again = subprocess.run([sys.executable, "-m", "bench.run_all", "--render-only", "--out",
                            str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout == proc.stdout and out.read_text() == text
