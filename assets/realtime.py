"""Realtime tables in Dagster (issue #15, part 6): the check `realtime_lag` on
`customer/<table>` of every `delivery: realtime` table, and the `realtime_lag` sensor that
evaluates it every minute.

`hakobu stream` runs as its own service (deploy/README.md), not as a Dagster run; Dagster
watches it from BigQuery. Per tenant × realtime table the sensor reads the table's state row,
the tenant's newest checkpoint time, the newest change-log commit time and the changes not
merged yet (resources.changelog.RealtimeDataset.lag_facts), judged by hakobu.realtime_lag:
failed (severity ERROR, as `delivered_by_deadline`) when the checkpoint is older than the
table's `max_lag_minutes` (default 5) or a change waits for its merge longer than
merge_every_minutes + max_lag_minutes, or when the table is not streaming at all. Typed
metadata plots on the check's page: `lag_seconds`, `merge_lag_seconds`, `unmerged_changes`.

Reported without a partition, with the tenant in the description and metadata: Dagster keeps
runless check evaluations unique per (asset, check, run id, partition), and a repeated report
with a partition would fail the tick (assets/deadlines.py). The check is left out of the
nightly and backfill jobs (pipelines/build.py): it is the sensor's. Executed by hand from the
UI it reports each table's worst tenant.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg

from assets.keys import customer_key
from hakobu.config import Config
from hakobu.deadlines import UTC
from hakobu.errors import HakobuError
from hakobu.naming import table_name
from hakobu.ports import IO
from hakobu.realtime_lag import LagVerdict, judge_lag
from resources.changelog import RealtimeDataset
from resources.dagster import HakobuIOResource

CHECK_NAME = "realtime_lag"
SENSOR_NAME = "realtime_lag"
DESCRIPTION = ("the realtime table keeps up: `hakobu stream`'s newest checkpoint for the "
               "tenant is at most max_lag_minutes old (default 5) and no change waits longer "
               "than merge_every_minutes + max_lag_minutes for its merge; evaluated every "
               "minute by the realtime_lag sensor")


def realtime_tables(config: Config) -> list[tuple[str, str]]:
    """(tenant, MySQL table) of every realtime table."""
    return [(tid, t) for tid in sorted(config.tenants)
            for t in config.tenant(tid).realtime_tables]


def verdicts(config: Config, io: IO, now: dt.datetime) -> list[tuple[str, str, LagVerdict]]:
    """(tenant, table, verdict) of every realtime table, read from BigQuery."""
    out = []
    for tid, name in realtime_tables(config):
        tenant = config.tenant(tid)
        cfg = tenant.table(name)
        try:
            facts = RealtimeDataset(io.customer(tenant)).lag_facts(table_name(name),
                                                                   tenant.cluster)
            v = judge_lag(facts, now, max_lag_s=cfg.max_lag_minutes * 60.0,
                          merge_every_s=cfg.merge_every_minutes * 60.0)
        except HakobuError as exc:
            v = LagVerdict(False, f"could not read its lag: {exc}", None, 0.0, 0)
        out.append((tid, name, v))
    return out


def metadata(tid: str, v: LagVerdict) -> dict:
    md = {"tenant": tid, "unmerged_changes": dg.MetadataValue.int(v.unmerged_changes),
          "merge_lag_seconds": dg.MetadataValue.float(round(v.merge_lag_seconds, 1))}
    if v.lag_seconds is not None:
        md["lag_seconds"] = dg.MetadataValue.float(round(v.lag_seconds, 1))
    for k in ("checkpoint_at", "newest_change_at"):
        if getattr(v, k) is not None:
            md[k] = getattr(v, k).isoformat()
    return md


def lag_events(config: Config, io: IO, now: dt.datetime) -> list[dg.AssetCheckEvaluation]:
    """The sensor's work, callable outside Dagster: one evaluation per tenant × table."""
    return [dg.AssetCheckEvaluation(asset_key=customer_key(name), check_name=CHECK_NAME,
                                    passed=v.passed, severity=dg.AssetCheckSeverity.ERROR,
                                    description=f"{tid}: {v.description}",
                                    metadata=metadata(tid, v))
            for tid, name, v in verdicts(config, io, now)]


def build_lag_check(config: Config) -> dg.AssetChecksDefinition | None:
    """The check's definition (None when no tenant has a realtime table)."""
    keys = sorted({table_name(n) for _, n in realtime_tables(config)})
    if not keys:
        return None

    @dg.multi_asset_check(name=CHECK_NAME, specs=[
        dg.AssetCheckSpec(CHECK_NAME, asset=customer_key(k), description=DESCRIPTION)
        for k in keys])
    def realtime_lag(io: HakobuIOResource):
        worst: dict[str, tuple[str, LagVerdict]] = {}
        for tid, name, v in verdicts(config, io.io, dt.datetime.now(UTC)):
            k = table_name(name)
            if k not in worst or (worst[k][1].passed and not v.passed):
                worst[k] = (tid, v)
        for k in keys:
            tid, v = worst[k]
            yield dg.AssetCheckResult(asset_key=customer_key(k), check_name=CHECK_NAME,
                                      passed=v.passed, severity=dg.AssetCheckSeverity.ERROR,
                                      description=f"{tid}: {v.description}",
                                      metadata=metadata(tid, v))

    return realtime_lag


def build_lag_sensor(config: Config, clock: Callable[[], dt.datetime] | None = None,
                     interval_s: int = 60) -> dg.SensorDefinition | None:
    if not realtime_tables(config):
        return None
    clock = clock or (lambda: dt.datetime.now(UTC))

    @dg.sensor(name=SENSOR_NAME, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Every minute, reads each realtime table's lag from BigQuery and "
                           "reports its realtime_lag check (ERROR when behind).")
    def realtime_lag(context: dg.SensorEvaluationContext, io: HakobuIOResource):
        return dg.SensorResult(asset_events=lag_events(config, io.io, clock()))

    return realtime_lag
