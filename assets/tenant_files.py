"""The `tenant_files` sensor: a broken tenant file is reported, and only its tenant stops.

The code location loads with `load_config(isolate=True)`: a tenant file that is invalid, or in
conflict with another (one dataset for two tenants, two tenants reading the same rows), leaves
its tenant(s) out — no asset partition, no schedule — while every other tenant keeps its
schedule and delivers. The problem cannot go unnoticed: this sensor's every tick fails, naming
each file, line and error, for as long as a tenant is left out (and `hakobu status` and
`hakobu validate` say the same). It also re-reads the files on each tick, so a file broken
*after* the code location loaded (the next reload would leave its tenant out) is reported
before that happens; clusters.yaml, warehouse.yaml and datasets.yaml fail closed (the code
location would not load at all), and that is reported too. It reads files only: no source, no
BigQuery, no run launched.
"""

import dagster as dg

from hakobu.config import Config, load_config
from hakobu.errors import ConfigError, ConfigErrors

SENSOR_NAME = "tenant_files"


class TenantFilesInvalid(ConfigError):
    """Raised by the sensor's tick, so the tick shows as failed with this message."""


def problems(config: Config) -> list[str]:
    """What is wrong with the tenant files, as the code location saw them and as they are now."""
    out = [f"tenant {b.tenant!r} is left out of the code location (not scheduled, not "
           f"delivered): {b.describe()}" for b in config.broken]
    try:
        now = load_config(config.root, isolate=True)
    except ConfigErrors as exc:
        out.append(f"the code location will not load after its next reload: {exc}")
        return out
    known = {b.file for b in config.broken}
    out += [f"tenant {b.tenant!r} will be left out after the next reload: {b.describe()}"
            for b in now.broken if b.file not in known]
    return out


def build_tenant_files_sensor(config: Config, interval_s: int = 300) -> dg.SensorDefinition:
    @dg.sensor(name=SENSOR_NAME, minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Fails while a tenant file is invalid (its tenant is left out, the "
                           "others are delivered), naming each file, line and problem.")
    def tenant_files(context: dg.SensorEvaluationContext):
        found = problems(config)
        if found:
            raise TenantFilesInvalid(f"{len(found)} tenant file problem(s):\n"
                                     + "\n".join(f"- {p}" for p in found),
                                     hint="fix the files (`hakobu validate` lists every "
                                          "problem), then reload the code location")
        return dg.SkipReason(f"every tenant file is valid ({len(config.tenants)} tenants)")

    return tenant_files
