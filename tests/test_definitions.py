import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

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


# -- any MySQL name, one tenant's broken file (issue #16) -----------------------------------------

ODD = ["ord$2024", "my table", "a-b", "a.b", "Ünïcødé", "名前", "order", "class", "2024_orders",
       "_TABLE_x", "_hakobu_state", "it's `q`", "x" * 64, "Orders"]


def odd_config(tmp_path, broken: bool = False):
    from tests.test_config import GOOD, write

    tables = "".join(f"  - name: '{n.replace(chr(39), chr(39) * 2)}'\n    cursor: 'updated at'\n"
                     for n in ODD)
    body = GOOD.split("tables:\n")[0] + "tables:\n" + tables
    files = {"a.yaml": "tenant: a\ncluster: main\n" + body,
             "b.yaml": "tenant: b\ncluster: main\n" + body.replace("cust_a", "cust_b")
             .replace("shop_a", "shop_b")}
    if broken:
        files["c.yaml"] = "tenant: c\ncluster: main\nsource: {schema: x}\n"
    return write(tmp_path, files)


def test_definitions_load_for_every_kind_of_mysql_table_name(tmp_path):
    from hakobu.naming import table_name

    config = load_config(odd_config(tmp_path))
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {f"customer/{table_name(n)}" for n in ODD} <= keys
    assert "customer/ord_2024_a76493" in keys and "customer/order" in keys
    assert "customer/Orders" in keys and "customer/hakobu_state_046ff6" in keys
    for tid in ("a", "b"):
        ctx = dg.build_schedule_context(repository_def=defs.get_repository_def())
        [req] = defs.resolve_schedule_def(f"nightly_{tid}").evaluate_tick(ctx).run_requests
        assert req.partition_key == tid
    from pipelines.build import definition_problems

    assert definition_problems(config) == []


def test_a_broken_tenant_file_leaves_the_others_scheduled_and_the_sensor_fails(tmp_path):
    from assets.tenant_files import SENSOR_NAME, TenantFilesInvalid

    config = load_config(odd_config(tmp_path, broken=True), isolate=True)
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    assert set(defs.resolve_job_def("nightly").partitions_def.get_partition_keys()) == {"a", "b"}
    defs.resolve_schedule_def("nightly_a")
    defs.resolve_schedule_def("nightly_b")
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with pytest.raises(TenantFilesInvalid) as exc:
        sensor(dg.build_sensor_context())
    text = str(exc.value)
    assert "tenant 'c' is left out of the code location" in text
    assert "c.yaml:1: destination: required key is missing" in text
    # and once fixed on disk, before the reload: the sensor says what the reload will do
    (tmp_path / "tenants" / "c.yaml").unlink()
    with pytest.raises(TenantFilesInvalid):
        sensor(dg.build_sensor_context())           # c is still out of this code location
    fixed = build_definitions(load_config(tmp_path, isolate=True))
    assert isinstance(fixed.resolve_sensor_def(SENSOR_NAME)(dg.build_sensor_context()),
                      dg.SkipReason)


def test_definition_problems_name_the_tenant_file(tmp_path, monkeypatch):
    import pipelines.build as build

    config = load_config(odd_config(tmp_path))
    real = build.tenant_schedule

    def schedule(config, tid, job):
        if tid == "b":
            raise dg.DagsterInvalidDefinitionError("a schedule Dagster refuses")
        return real(config, tid, job)
    monkeypatch.setattr(build, "tenant_schedule", schedule)
    [problem] = build.definition_problems(config)
    assert "b.yaml:1: the Dagster code location would not load" in problem
    assert "a schedule Dagster refuses" in problem


def test_code_location_loads_with_odd_names_and_a_broken_tenant(tmp_path):
    import os

    root = odd_config(tmp_path / "cfg", broken=True)
    out = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions",
                          "validate", "-w", "workspace.yaml"], cwd=REPO, capture_output=True,
                         text=True, timeout=180,
                         env={**os.environ, "DAGSTER_HOME": str(tmp_path),
                              "HAKOBU_CONFIG_DIR": str(root)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "left out of the code location" in out.stdout + out.stderr


def test_validate_offline_passes_odd_names_and_names_every_problem_with_its_line(
        tmp_path, monkeypatch, capsys):
    from hakobu.cli import main

    root = odd_config(tmp_path)
    monkeypatch.setenv("HAKOBU_CONFIG_DIR", str(root))
    assert main(["validate", "--offline"]) == 0
    assert f"OK: 2 tenants, {2 * len(ODD)} tables" in capsys.readouterr().out
    t = root / "tenants"
    (t / "a.yaml").write_text((t / "a.yaml").read_text().replace('"0 2 * * *"', '"0 2 31 2 *"')
                              + "  - name: orders\n")
    (t / "c.yaml").write_text("tenant: c\ncluster: main\nsource: [\n")
    assert main(["validate", "--offline"]) == 1
    err = capsys.readouterr().err
    assert "a.yaml:9: schedule.cron: '0 2 31 2 *' never runs" in err
    assert (f"a.yaml:{13 + 2 * len(ODD)}: tables.{len(ODD)}.name: tables 'Orders', 'orders' "
            "would all be delivered as BigQuery table 'Orders'") in err
    assert "c.yaml:4: malformed YAML" in err
