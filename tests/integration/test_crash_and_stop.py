"""Runs never hang and stop when told (issue #12, points 1 and 2).

`hakobu load` runs in subprocesses against one private DAGSTER_HOME (the CLI's SQLite instance),
as a user would run it: SIGKILLed at random moments six times in a row, then once more to the
end; and stopped with SIGTERM / SIGINT in the middle of a long first load, then rerun. Each time
the instance is read back (run status, pool claims) and BigQuery is compared with the source.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from hakobu.config import load_config
from hakobu.reconcile import diff_table
from hakobu.planning import plan_for
from tests.live import destination_for, source_for
from resources.bigquery_client import BigQuerySettings
from tests.integration.conftest import make_orders

REPO = Path(__file__).resolve().parents[2]
POOL = "hakobu_mysql"
ACTIVE = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def cli_env(home: Path) -> dict:
    """The environment of a user's shell: this worktree's code, the test's config (set by
    make_config), emulator and instance."""
    home.mkdir(exist_ok=True)
    env = dict(os.environ, DAGSTER_HOME=str(home), PYTHONPATH=str(REPO),
               PYTHONUNBUFFERED="1",
               HAKOBU_WORK_DIR=str(home.parent / "work"))   # staging files a kill leaves
    return env


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "hakobu.cli", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()


def runs(home: Path) -> list:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(reversed(instance.get_runs()))          # oldest first


def claimed(home: Path) -> list[str]:
    """Run ids holding (or waiting for) a slot of the hakobu_mysql pool."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        if POOL not in storage.get_concurrency_keys():
            return []
        info = storage.get_concurrency_info(POOL)
        return ([s.run_id for s in info.claimed_slots]
                + [s.run_id for s in info.pending_steps])


def wait_for_step(home: Path, proc: subprocess.Popen, known: int, timeout: float = 60) -> bool:
    """Until the load's run (a new one) has started its step; False if the process ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        rs = runs(home)
        if len(rs) > known and rs[-1].status == dg.DagsterRunStatus.STARTED:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                if instance.all_logs(rs[-1].run_id, of_type=dg.DagsterEventType.STEP_START):
                    return True
        time.sleep(0.05)
    raise AssertionError(f"no run started within {timeout}s")


def assert_equal_to_source(tables=("orders", "items")) -> None:
    config = load_config()
    tenant = config.tenant("a")
    source = source_for(config, tenant)
    dest = destination_for(tenant, BigQuerySettings.from_env())
    for name in tables:
        d = diff_table(source, dest, plan_for(source, tenant, tenant.table(name)))
        assert d.equal, (name, d.summary())


def make_items(sql, schema, n: int) -> None:
    sql(f"CREATE TABLE `{schema}`.items (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, "
        "name VARCHAR(40), qty INT, INDEX ix_cur (updated_at))")
    sql(f"INSERT INTO `{schema}`.items SELECT seq, '2026-01-01' + INTERVAL seq SECOND, "
        f"CONCAT('item ', seq), seq % 97 FROM `{schema}`.seq_1_to_{n}")


TABLES = ("- name: orders\n  cursor: updated_at\n  chunk_rows: 100\n"
          "- name: items\n  cursor: updated_at\n  chunk_rows: 200\n")


def test_six_sigkilled_loads_do_not_block_the_seventh(sql, schema, dataset, make_config, bq_env,
                                                      tmp_path, capsys):
    make_orders(sql, schema, n=1500)
    make_items(sql, schema, 3000)
    make_config({"a": (schema, dataset, TABLES)})
    home = tmp_path / "dagster_home"
    env = cli_env(home)
    rng = random.Random()
    left_claimed = 0
    report = []
    for i in range(6):
        # rows change between loads, so every load has reading and merging to do
        sql(f"UPDATE `{schema}`.items SET qty = qty + 1, updated_at = NOW(6) - INTERVAL 1 SECOND "
            f"WHERE id % 6 = {i}")
        sql(f"UPDATE `{schema}`.orders SET note = 'kill {i}', updated_at = NOW(6) - INTERVAL 1 "
            f"SECOND WHERE id % 5 = {i % 5}")
        before = len(runs(home))
        t0 = time.monotonic()
        proc = spawn(["load", "a"], env, tmp_path / f"load{i}.log")
        in_step = wait_for_step(home, proc, before)
        delay = rng.uniform(0.0, 0.8)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        last = runs(home)[-1]
        holds = last.run_id in claimed(home)
        left_claimed += holds
        report.append(f"kill {i + 1}: {time.monotonic() - t0:4.1f}s after spawn, "
                      f"{delay:.2f}s into the step ({'in step' if in_step else 'ended'}); "
                      f"run left {last.status.value}, pool claim held: {holds}")
    # the kills landed inside runs, which stayed STARTED with their pool claims (Dagster does
    # not notice a dead in-process run by itself)
    assert left_claimed >= 4, "\n".join(report)

    t0 = time.monotonic()
    proc = spawn(["load", "a"], env, tmp_path / "load7.log")
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the seventh load hung:\n" + "\n".join(report) + "\n"
                             + (tmp_path / "load7.log").read_text()[-2000:])
    took = time.monotonic() - t0
    out = (tmp_path / "load7.log").read_text()
    assert code == 0, out
    rs = runs(home)
    assert rs[-1].status == dg.DagsterRunStatus.SUCCESS
    # every killed run was marked failed, naming its dead process, and freed its claims
    assert [r.status for r in rs[:-1] if r.status in ACTIVE] == []
    assert claimed(home) == []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for r in rs[:-1]:
            if r.status == dg.DagsterRunStatus.FAILURE:
                [failure] = instance.all_logs(r.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
                assert "is gone" in failure.message, failure.message
    assert "marked 6 crashed runs failed" in out or "crashed run" in out, out
    assert_equal_to_source()
    with capsys.disabled():
        print("\n" + "\n".join(report) + f"\nseventh load: exit {code} in {took:.1f}s\n"
              + out.strip())


def test_sigterm_and_ctrl_c_stop_loads_promptly_and_a_rerun_completes_them(
        sql, schema, dataset, make_config, bq_env, tmp_path, capsys):
    """SIGTERM to a load in the middle of a long first load (two tables side by side, in
    worker threads), Ctrl-C (SIGINT) to a second load waiting for a pool slot (Dagster's own
    wait, where its interrupt handler never raises). Both end within 10 s, their runs canceled
    or failed and their claims freed; a rerun completes the load."""
    make_items(sql, schema, 60_000)
    make_orders(sql, schema, n=3000)
    tables = ("- name: items\n  cursor: updated_at\n  chunk_rows: 500\n  query_rows: 1000\n"
              "- name: orders\n  cursor: updated_at\n  chunk_rows: 100\n")
    # held back by a small read budget, the first load would take minutes
    make_config({"a": (schema, dataset, tables)},
                cluster_extra="read_budget:\n  pages_per_second: 40\n  counter: logical\n"
                              "  max_connections: 2\n")
    home = tmp_path / "dagster_home"
    env = cli_env(home)
    load = spawn(["load", "a"], env, tmp_path / "load.log")
    assert wait_for_step(home, load, 0)
    with dg.DagsterInstance.from_config(str(home)) as instance:     # one slot: the load's
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
    waiting = spawn(["load", "a"], env, tmp_path / "waiting.log")
    deadline = time.monotonic() + 60
    while len(runs(home)) < 2 or runs(home)[-1].run_id not in claimed(home):
        assert time.monotonic() < deadline and waiting.poll() is None
        time.sleep(0.1)
    time.sleep(1.5)
    stopped = {}
    for name, proc, sig in (("load", load, signal.SIGTERM), ("waiting", waiting, signal.SIGINT)):
        t0 = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{sig.name} did not stop the {name} within 30s:\n"
                                 + (tmp_path / f"{name}.log").read_text()[-3000:])
        took = time.monotonic() - t0
        out = (tmp_path / f"{name}.log").read_text()
        stopped[name] = (sig.name, took, code, out)
        assert took < 10, (name, took, out)
        assert code == 128 + sig, (name, code, out)
        assert "Traceback" not in out, out
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "rerun" in errors[0], out
    first, second = runs(home)
    for run in (first, second):
        assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE), \
            run.status
    assert claimed(home) == []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 4)

    # the rerun completes it (without the budget, so the test stays short)
    make_config({"a": (schema, dataset, tables)})
    rerun = spawn(["load", "a"], cli_env(home), tmp_path / "rerun.log")
    assert rerun.wait(120) == 0, (tmp_path / "rerun.log").read_text()
    assert runs(home)[-1].status == dg.DagsterRunStatus.SUCCESS
    assert claimed(home) == []
    assert_equal_to_source()
    with capsys.disabled():
        for (name, (sig, took, code, out)), run in zip(stopped.items(), (first, second)):
            print(f"\n{sig} to the {name}: exited {took:.2f}s after the signal with {code}, "
                  f"run {run.status.value}\n{out.strip()}")
