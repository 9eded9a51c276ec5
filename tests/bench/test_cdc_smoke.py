"""The realtime latency block (`bench/cdc.py`, `GOAL cdc-latency`) runs end to end in its quickest
form: a private binlog MariaDB, the emulator behind the strict layer, 3 tenants, `hakobu stream`
in its own process, 3 s of 20 changes/s. No timing is checked (timing goals live in
`make bench`): only that the GOAL line is printed and its figures come from real observations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import GOAL_LINE, parse_goal_lines

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".local" / "test" / "bench-cdc"     # not the bench's own .local/bench/cdc


@pytest.mark.timeout(240)
def test_cdc_block_quickest_form(mysql_server, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    env = dict(os.environ, HAKOBU_MYSQL_HOST=mysql_server.host,
               HAKOBU_MYSQL_PORT=str(mysql_server.port), HAKOBU_MYSQL_USER=mysql_server.user,
               HAKOBU_BENCH_CDC_STATE=str(STATE))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--only", "cdc", "--cdc-seconds", "3",
         "--cdc-rate", "20", "--cdc-tenants", "3", "--cdc-seed-rows", "50", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines and all(GOAL_LINE.match(ln) for ln in lines), proc.stdout
    [goal] = parse_goal_lines(proc.stdout)
    assert goal["name"] == "cdc-latency" and goal["target"] == "<=60.0s"
    assert goal["measured"] != "n/a", proc.stderr[-3000:]          # seen, rate, merged: all ok
    m = json.loads((STATE / "last_cdc.json").read_text())
    assert m["changes"] > 20 and m["seen"] == m["changes"] and m["unseen"] == 0
    lat = m["latency"]
    assert lat["n"] == m["seen"] and 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert m["landed"]["n"] == m["changes"] and m["not_landed"] == 0   # every change logged
    assert m["poll"]["queries"] > 0 and m["insertall"]["rows"] >= m["changes"]
    assert m["mismatches"] == [] and m["writes_streaming"]["change logs"] == 0
    assert "cdc: visible in <table>_live" in proc.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert any(t.startswith("9. Realtime") for t, _ in report["sections"])
