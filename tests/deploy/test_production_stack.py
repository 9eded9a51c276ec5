"""deploy/ for real: PostgreSQL instance, one daemon, a gRPC code server, the webserver.

The tests share one stack (conftest.deployment) and run in file order: the location check, a
queued batch under the limits (the every-minute schedule's first tick comes while it runs), a
daemon crash, the schedule's runs, then killed run workers. Every claim is read back from run
records and the event log.

The daemon crash comes before the schedule's own test: it waits for a minute boundary anyway
(a tick must fall while the daemon is down, and be caught up), so the schedule's test then finds
its tick runs done instead of waiting for the next boundary itself — which would also leave the
crash test starting just after a boundary, with the longest wait for the next one. Killed
workers come last: their runs fail and are retried, which the crash test's accounting of every
run of the instance would count.
"""

import signal
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from dagster import DagsterEventType, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import (PARENT_RUN_ID_TAG, RUN_KEY_TAG, SCHEDULE_NAME_TAG,
                                        SCHEDULED_EXECUTION_TIME_TAG)
from dagster_graphql import DagsterGraphQLClient

from tests.deploy.conftest import TENANTS, TICK
from tests.deploy.stack import wait_for

LOCATION, REPOSITORY, JOB = "hakobu", "__repository__", "nightly"
SCHEDULE_TAG, SCHEDULED_TIME_TAG = SCHEDULE_NAME_TAG, SCHEDULED_EXECUTION_TIME_TAG
ACTIVE = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
          DagsterRunStatus.STARTED}


def submit(stack, tenant: str) -> str:
    """Launch the nightly job for one tenant as the UI would: through the webserver, into the
    queue, with the tags the tenant's schedule sets (pipelines.build.run_tags). The job's
    executor runs its one step inside the run worker (pipelines/build.py)."""
    cluster = TENANTS[tenant][0]
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.web_port)
    return client.submit_job_execution(
        JOB, repository_location_name=LOCATION, repository_name=REPOSITORY,
        tags={"dagster/partition": tenant, "hakobu/tenant": tenant, "hakobu/cluster": cluster})


def records(instance, run_ids=None, job=JOB):
    return instance.get_run_records(RunsFilter(run_ids=run_ids, job_name=job))


def wait_finished(dep, run_ids: list[str], timeout: float) -> list:
    def done():
        recs = records(dep.instance, run_ids)
        return recs if len(recs) == len(run_ids) and all(
            r.dagster_run.is_finished for r in recs) else None

    return wait_for(f"runs {run_ids} to finish", done, timeout, 1.0, dep.stack.logs)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one moment (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, step in points:
        cur += step
        best = max(best, cur)
    return best


def limit_for(dep, key: str) -> int:
    [entry] = [e for e in dep.limits if e["key"] == key and isinstance(e.get("value"), dict)]
    return entry["limit"]


def assert_within_limits(dep) -> dict[str, int]:
    """Check every finished nightly run's [start, end] from its record against the limits per
    cluster and per tenant. Returns the most runs seen at once per cluster (and overall)."""
    recs = [r for r in records(dep.instance) if r.start_time and r.end_time]
    by = {"cluster": defaultdict(list), "tenant": defaultdict(list)}
    for r in recs:
        tags = r.dagster_run.tags
        by["cluster"][tags["hakobu/cluster"]].append((r.start_time, r.end_time))
        by["tenant"][tags["hakobu/tenant"]].append((r.start_time, r.end_time))
    seen = {c: max_overlap(iv) for c, iv in by["cluster"].items()}
    cluster_limit, tenant_limit = limit_for(dep, "hakobu/cluster"), limit_for(dep, "hakobu/tenant")
    for cluster, most in seen.items():
        assert most <= cluster_limit, f"cluster {cluster}: {most} runs at once > {cluster_limit}"
    for tenant, iv in by["tenant"].items():
        assert max_overlap(iv) <= tenant_limit, f"tenant {tenant}: overlapping runs {iv}"
    seen["*"] = max_overlap([(r.start_time, r.end_time) for r in recs])
    return seen


def timeline(dep) -> str:
    """One line per nightly run: tenant, cluster, queued -> started -> ended (seconds)."""
    recs = sorted(records(dep.instance), key=lambda r: r.create_timestamp)
    if not recs:
        return "(no runs)"
    t0 = recs[0].create_timestamp.timestamp()

    def rel(t):
        return f"{t - t0:6.1f}" if t else "     -"

    def line(r) -> str:
        tags = r.dagster_run.tags
        return (f"{tags.get('hakobu/tenant', '?'):>5} {tags.get('hakobu/cluster', '?'):>5} "
                f"{'tick' if SCHEDULE_TAG in tags else 'sub ':>4} "
                f"{rel(r.create_timestamp.timestamp())} {rel(r.start_time)} {rel(r.end_time)} "
                f"{r.dagster_run.status.value}")

    return "\n".join(line(r) for r in recs)


def event_count(instance, run_id: str, event_type: DagsterEventType) -> int:
    return len(instance.all_logs(run_id, of_type=event_type))


def grpc_origin(run) -> tuple[str, int]:
    origin = run.remote_job_origin.repository_origin.code_location_origin
    return origin.host, origin.port


# -- 3. the webserver and the daemon load the code location through the gRPC server --------------

def test_webserver_and_daemon_load_the_location_over_grpc(deployment):
    dep, stack = deployment, deployment.stack
    data = stack.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
        name loadStatus displayMetadata { key value }
        locationOrLoadError { __typename
          ... on RepositoryLocation { repositories { name schedules { name } } }
          ... on PythonError { message } } } } } }""")
    [entry] = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == LOCATION and entry["loadStatus"] == "LOADED"
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    meta = {m["key"]: m["value"] for m in entry["displayMetadata"]}
    assert meta == {"host": "127.0.0.1", "port": str(stack.grpc_port)}
    [repo] = entry["locationOrLoadError"]["repositories"]
    assert {s["name"] for s in repo["schedules"]} == {f"nightly_{t}" for t in TENANTS}

    def daemons_healthy():
        d = stack.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy "
                          "required } } } }")
        status = {s["daemonType"]: s["healthy"]
                  for s in d["instance"]["daemonHealth"]["allDaemonStatuses"] if s["required"]}
        needed = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"}
        return status if needed <= {k for k, ok in status.items() if ok} else None

    wait_for("healthy daemon heartbeats", daemons_healthy, 60, 1.0, stack.logs)

    # The daemon registered the default-running schedules from the location it loaded: their
    # stored origin is the gRPC server, the only entry of deploy/workspace.grpc.yaml.
    def tick_state():
        return [s for s in dep.instance.all_instigator_state() if s.name == f"nightly_{TICK}"]

    [state] = wait_for("the daemon to register the schedules", tick_state, 60, 1.0, stack.logs)
    origin = state.origin.repository_origin.code_location_origin
    assert (origin.host, origin.port) == ("127.0.0.1", stack.grpc_port)


# -- 2. queued runs of several tenants respect the per-cluster (and per-tenant) limits ----------

def test_queued_runs_respect_cluster_limits_and_all_complete(deployment):
    dep = deployment
    batch = ["e1", "e2", "e3", "e1", "w1"]   # east: 4 runs (e1 twice); west: w1 and the ticks
    run_ids = [submit(dep.stack, t) for t in batch]
    recs = wait_finished(dep, run_ids, 240)
    assert {r.dagster_run.run_id: r.dagster_run.status for r in recs} == {
        rid: DagsterRunStatus.SUCCESS for rid in run_ids}, dep.stack.logs()
    for r in recs:   # every run went through the queue
        assert event_count(dep.instance, r.dagster_run.run_id, DagsterEventType.RUN_ENQUEUED) == 1
    seen = assert_within_limits(dep)
    # the limit bound (east had 4 runs) and different clusters still ran side by side
    assert seen["east"] <= limit_for(dep, "hakobu/cluster") < 4
    assert seen["*"] >= 2, f"runs never overlapped: {seen}\n{timeline(dep)}"
    # the pool limit of deploy/dagster.yaml was applied to the assets' pool
    pools = {p.name: p for p in dep.instance.event_log_storage.get_pool_limits()}
    assert pools["hakobu_mysql"].limit == 8 and pools["hakobu_mysql"].from_default
    print(f"\nmost runs at once: {seen}\n{timeline(dep)}")


# -- 4. a daemon killed mid-way loses no run and starts none twice ------------------------------

def test_daemon_sigkill_loses_no_run_and_starts_none_twice(deployment):
    dep, stack = deployment, deployment.stack
    batch = ["e1", "e2", "e3"]            # east limit 2: e3 waits in the queue
    submitted = []

    def midway_or_missed(run_ids):
        status = [r.dagster_run.status for r in records(dep.instance, run_ids)]
        if DagsterRunStatus.QUEUED not in status:
            return "missed"                  # every run dequeued: no mid-way moment left
        launching = dep.instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTING]))
        return ("midway" if DagsterRunStatus.STARTED in status and not launching
                else None)   # not in the middle of a launch: that is Dagster's own window (run
                             # monitoring fails a run stuck in STARTING)

    # The moment (a run started, one queued, no launch anywhere — a tick's launch counts) lasts
    # about one run; on a loaded machine a tick's launch can cover all of it. Then the batch
    # runs out unkilled (it is accounted for below like every run) and a new one is tried.
    for attempt in range(1, 4):
        run_ids = [submit(stack, t) for t in batch]
        submitted += run_ids
        state = wait_for("a run in progress while another waits", lambda: midway_or_missed(
            run_ids), 90, 0.2, stack.logs)
        if state == "midway":
            break
        print(f"\nattempt {attempt}: no moment without a launch before the queue emptied",
              flush=True)
        wait_finished(dep, run_ids, 180)
    else:
        raise AssertionError(f"never saw a run in progress while another waited\n{timeline(dep)}")
    stack.daemon.signal_group(signal.SIGKILL)   # no shutdown, no cleanup
    stack.daemon.popen.wait(10)
    killed_at = datetime.now(timezone.utc)
    queued = {r.dagster_run.run_id for r in records(dep.instance, run_ids)
              if r.dagster_run.status == DagsterRunStatus.QUEUED}
    assert queued, "the daemon was killed after it had dequeued every run: not mid-way"
    # the next schedule tick falls while the daemon is down
    missed = killed_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    pause = max((missed - killed_at).total_seconds() + 3, 8)
    time.sleep(pause)
    assert queued == {r.dagster_run.run_id for r in records(dep.instance, run_ids)
                      if r.dagster_run.status == DagsterRunStatus.QUEUED}, \
        "a run left the queue without a daemon"
    assert not dep.instance.get_runs(RunsFilter(tags={
        SCHEDULED_TIME_TAG: missed.isoformat()})), "a tick ran without a daemon"

    stack.start_daemon()
    wait_finished(dep, run_ids, 180)

    def missed_tick_done():
        runs = dep.instance.get_runs(RunsFilter(tags={SCHEDULED_TIME_TAG: missed.isoformat()}))
        return runs if runs and all(r.is_finished for r in runs) else None

    wait_for(f"the tick of {missed:%H:%M} to be caught up", missed_tick_done, 120, 1.0,
             stack.logs)

    # Accounting over every nightly run of the instance (ticks after this point may be running).
    runs = [r.dagster_run for r in records(dep.instance)]
    finished = [r for r in runs if r.is_finished]
    assert all(r.status in ACTIVE for r in runs if not r.is_finished)
    assert {r.run_id: r.status for r in finished} == {
        r.run_id: DagsterRunStatus.SUCCESS for r in finished}, stack.logs()
    lifecycle = (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING,
                 DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS)
    for r in finished:   # queued once, launched once, started once, succeeded once
        counts = {e.value: event_count(dep.instance, r.run_id, e) for e in lifecycle}
        assert set(counts.values()) == {1}, (r.run_id, r.tags, counts)
    assert not [r for r in runs if PARENT_RUN_ID_TAG in r.tags], "a run was retried"
    assert set(submitted) <= {r.run_id for r in finished}
    # one run per schedule tick, every minute since the first, the missed one included
    ticks = Counter(r.tags[SCHEDULED_TIME_TAG] for r in runs
                    if r.tags.get(SCHEDULE_TAG) == f"nightly_{TICK}")
    assert all(n == 1 for n in ticks.values()), ticks
    times = sorted(datetime.fromisoformat(t) for t in ticks)
    assert missed in times
    assert times == [times[0] + timedelta(minutes=i) for i in range(len(times))], times
    keys = Counter(r.tags[RUN_KEY_TAG] for r in runs if RUN_KEY_TAG in r.tags)
    assert all(n == 1 for n in keys.values()), keys
    seen = assert_within_limits(dep)
    print(f"\n{timeline(dep)}\ndaemon down {pause:.0f}s; ticks {[f'{t:%H:%M}' for t in times]}; "
          f"{len(finished)} nightly runs, all SUCCESS once; most at once {seen}")


# -- 1. the daemon launches a tenant's scheduled run on its own, and it loads the tenant --------

def test_schedule_launches_a_run_that_loads_the_tenant(deployment):
    dep = deployment

    def tick_run():
        runs = dep.instance.get_runs(RunsFilter(tags={SCHEDULE_TAG: f"nightly_{TICK}"}))
        done = [r for r in runs if r.status == DagsterRunStatus.SUCCESS]
        failed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
        assert not failed, dep.stack.logs()
        return done[-1] if done else None

    run = wait_for("a scheduled run of tenant tick", tick_run, 150, 1.0, dep.stack.logs)
    assert run.tags["hakobu/tenant"] == TICK and run.tags["hakobu/cluster"] == "west"
    assert run.tags["dagster/partition"] == TICK
    assert grpc_origin(run) == ("127.0.0.1", dep.stack.grpc_port)

    schema, value = dep.schemas["west"], TENANTS[TICK][1]
    with dep.mysql.connect() as conn, conn.cursor() as cur:
        for table in ("members", "plans"):
            cur.execute(f"SELECT COUNT(*) FROM `{schema}`.`{table}` WHERE tenant_id = %s",
                        (value,))
            [source] = cur.fetchone()
            [[loaded]] = list(dep.bq_client.query(
                f"SELECT COUNT(*) FROM `{dep.datasets[TICK]}.{table}`").result())
            assert source > 0 and loaded == source, (table, source, loaded)


# -- 5. a killed run worker never blocks its tenant ----------------------------------------------

def _started_with_worker(dep, run_id: str):
    """The run, once its delivery step runs and has recorded its worker process."""
    from hakobu.runs import PID_TAG

    def check():
        [rec] = records(dep.instance, [run_id])
        run = rec.dagster_run
        assert not run.is_finished, (run.status, dep.stack.logs())
        return run if run.status == DagsterRunStatus.STARTED and PID_TAG in run.tags else None

    return wait_for(f"run {run_id} to start its step", check, 90, 0.1, dep.stack.logs)


def test_a_killed_run_worker_does_not_block_its_tenant(deployment):
    """A run worker SIGKILLed mid-run, then a code server killed together with its worker:
    each time the run is failed (by the code server, then by run monitoring through
    hakobu.run_launcher's pid check) and the tenant's next queued run proceeds — instead of
    waiting behind a STARTED run for max_runtime_seconds (12 h)."""
    import os

    from hakobu.runs import PID_TAG

    dep, stack = deployment, deployment.stack
    tenant = "w2"
    timings = []
    for how in ("worker", "code server with its worker"):
        doomed = submit(stack, tenant)
        run = _started_with_worker(dep, doomed)
        nxt = submit(stack, tenant)          # waits in the queue: one run per tenant
        t0 = time.monotonic()
        if how == "worker":
            os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
        else:
            stack.grpc.signal_group(signal.SIGKILL)
            stack.grpc.popen.wait(10)
            wait_for("the run worker to be gone",
                     lambda: not _pid_alive(int(run.tags[PID_TAG])), 20, 0.2)
            stack.start_code_server()
            stack.wait_code_server()
        print(f"\n{how} killed, waiting for its run to be failed", flush=True)
        [failed] = wait_finished(dep, [doomed], 120)
        failed_in = time.monotonic() - t0
        assert failed.dagster_run.status == DagsterRunStatus.FAILURE, stack.logs()
        [done] = wait_finished(dep, [nxt], 240)
        assert done.dagster_run.status == DagsterRunStatus.SUCCESS, stack.logs()
        timings.append(f"{how} killed: run failed {failed_in:.1f}s later, the tenant's next "
                       f"run succeeded {time.monotonic() - t0:.1f}s later")
    # retries of the crashed runs (run_retries) finish too, and nothing of w2 is left going
    def settled():
        runs = dep.instance.get_runs(RunsFilter(tags={"hakobu/tenant": tenant}))
        return all(r.is_finished for r in runs)

    wait_for("the tenant's runs to settle", settled, 240, 1.0, stack.logs)
    print("\n" + "\n".join(timings) + "\n" + timeline(dep))


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = open(f"/proc/{pid}/stat").read()
        return stat[stat.rindex(")") + 2] != "Z"
    except OSError:
        return False
