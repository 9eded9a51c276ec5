import subprocess
import sys
from pathlib import Path

import dagster as dg

from hakobu.config import load_config
from pipelines.build import build_definitions

REPO = Path(__file__).resolve().parent.parent


def test_every_table_tenant_and_schedule_is_defined():
    config = load_config()
    defs = build_definitions(config)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    for tenant in config.tenants.values():
        for table in tenant.tables:
            assert f"customer/{table.name}" in keys
    job = defs.resolve_job_def("nightly")
    assert set(job.partitions_def.get_partition_keys()) == set(config.tenants)
    for tid, tenant in config.tenants.items():
        sched = defs.resolve_schedule_def(f"nightly_{tid}")
        assert sched.cron_schedule == tenant.schedule.cron
        assert sched.execution_timezone == tenant.schedule.timezone
        assert sched.job_name == "nightly"
        repo = defs.get_repository_def()
        ctx = dg.build_schedule_context(repository_def=repo)
        [req] = sched.evaluate_tick(ctx).run_requests
        assert req.partition_key == tid
        assert req.tags["hakobu/cluster"] == tenant.cluster


def test_code_location_loads_with_dagster(tmp_path):
    out = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions",
                          "validate", "-w", "workspace.yaml"], cwd=REPO, capture_output=True,
                         text=True, timeout=180, env={**__import__("os").environ,
                                                       "DAGSTER_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
