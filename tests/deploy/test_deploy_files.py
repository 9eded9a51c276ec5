"""deploy/ files that cannot run here, checked as far as this machine can.

The container run launchers of deploy/k8s and deploy/ecs: no Kubernetes cluster and no AWS
account here: each example is validated by Dagster's own
config schema inside the full instance file, then the launcher is built from it. The K8s launcher
then submits a real run's Job to a recording stand-in for the Kubernetes API, and the test reads
the Job it would have created. Needs the `deploy` extra (dagster-k8s, dagster-aws).
"""

from pathlib import Path

import json
import re

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._config import process_config, resolve_to_config_type, validate_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id
from dagster._serdes.config_class import ConfigurableClassData

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "registry.example.com/hakobu:2026.11.1"


def instance_with(launcher_file: str) -> dict:
    """deploy/dagster.yaml with its run_launcher block replaced by the example's, as the
    example's header tells an operator to do."""
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    example = yaml.safe_load((DEPLOY / launcher_file).read_text())
    assert set(example) == {"run_launcher"}, f"{launcher_file}: only a run_launcher block"
    instance["run_launcher"] = example["run_launcher"]
    return instance


def checked_launcher_config(instance: dict) -> tuple[type, dict]:
    """Validate the whole instance file and the launcher's own config; return the class and the
    config with defaults filled in, as Dagster would load them."""
    result = validate_config(dagster_instance_config_schema(), instance)
    assert result.success, [e.message for e in result.errors]
    block = instance["run_launcher"]
    data = ConfigurableClassData(block["module"], block["class"], yaml.safe_dump(block["config"]))
    klass = getattr(__import__(block["module"], fromlist=[block["class"]]), block["class"])
    processed = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    assert processed.success, [e.message for e in processed.errors]
    return klass, processed.value


def test_the_production_instance_file_passes_dagsters_schema():
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    result = validate_config(dagster_instance_config_schema(), instance)
    assert result.success, [e.message for e in result.errors]
    # every connection setting comes from the environment: no value, so no secret, in the file
    pg = instance["storage"]["postgres"]["postgres_db"]
    assert all(set(v) == {"env"} for k, v in pg.items() if k != "scheme"), pg


class RecordingBatchApi:
    """Stands in for kubernetes.client.BatchV1Api: keeps the Jobs it is asked to create."""

    def __init__(self):
        self.created = []

    def create_namespaced_job(self, body, namespace, **kwargs):
        self.created.append((namespace, body))
        return body


def test_k8s_launcher_config_builds_the_run_job(tmp_path):
    pytest.importorskip("dagster_k8s", reason="needs the deploy extra: pip install -e '.[deploy]'")
    klass, config = checked_launcher_config(instance_with("k8s/run_launcher.yaml"))
    assert klass.__name__ == "K8sRunLauncher" and config["load_incluster_config"] is True

    # Outside a cluster: the same config, with a kubeconfig that points nowhere (never dialled).
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        "users": [{"name": "t", "user": {}}]}))
    batch = RecordingBatchApi()
    launcher = klass(**{**config, "load_incluster_config": False,
                        "kubeconfig_file": str(kubeconfig)}, k8s_client_batch_api=batch)

    (tmp_path / "home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        launcher.register_instance(instance)
        origin = JobPythonOrigin("nightly", RepositoryPythonOrigin(
            "/usr/local/bin/python",   # as the code server in deploy/Dockerfile reports it
            ModuleCodePointer("pipelines.definitions", "defs", "/opt/hakobu"),
            container_image=IMAGE))
        run = instance.add_run(DagsterRun(
            job_name="nightly", run_id=make_new_run_id(), job_code_origin=origin,
            status=DagsterRunStatus.STARTING,
            tags={"dagster/partition": "alpha", "hakobu/tenant": "alpha",
                  "hakobu/cluster": "studio-east"}))
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    [(namespace, job)] = batch.created
    assert namespace == "hakobu"
    assert job.spec.backoff_limit == 0 and job.spec.ttl_seconds_after_finished == 86400
    pod = job.spec.template.spec
    assert pod.service_account_name == "hakobu-run-worker"
    assert pod.node_selector == {"workload": "batch"}
    [container] = pod.containers
    assert container.image == IMAGE     # the code server's image, not a pinned job_image
    assert container.args[-3:-1] == ["api", "execute_run"], container.args
    assert run.run_id in container.args[-1]
    env_from = [(e.config_map_ref and e.config_map_ref.name, e.secret_ref and e.secret_ref.name)
                for e in container.env_from]
    assert env_from == [("hakobu-env", None), (None, "hakobu-secrets")]
    env = {e.name: e.value for e in container.env}
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert not [k for k in env if "PASSWORD" in k], "secrets come from the Secret, not values"
    assert container.resources.limits == {"memory": "2Gi"}
    assert job.metadata.labels["app.kubernetes.io/part-of"] == "hakobu"


def test_ecs_launcher_config_builds_the_launcher(monkeypatch):
    pytest.importorskip("dagster_aws", reason="needs the deploy extra: pip install -e '.[deploy]'")
    klass, config = checked_launcher_config(instance_with("ecs/run_launcher.yaml"))
    assert klass.__name__ == "EcsRunLauncher"
    # boto3 needs a region to build clients; nothing is sent (no credentials, no endpoint call).
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    # The constructor checks run_task_kwargs against the ECS RunTask model of botocore, the
    # secrets' shape and the tag allow list.
    launcher = klass(**config)
    assert launcher.run_task_kwargs["launchType"] == "FARGATE"
    assert {s["name"] for s in launcher.secrets} == {"DAGSTER_PG_PASSWORD",
                                                     "HAKOBU_MYSQL_PASSWORD_STUDIO_EAST"}
    assert launcher.secrets_tags == []
    assert not [v for v in launcher.env_vars if "=" in v], "env_vars name variables, no values"


def test_dockerfile_serves_the_code_location_the_stack_test_runs():
    """No Docker daemon here: the image's command must be the one tests/deploy runs for real
    (host and port aside), and it must carry the files that command and the instance need."""
    from tests.deploy.stack import Stack

    text = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*?\])$", text.replace("\\\n", ""), re.M | re.S)[1])
    stack = Stack(root=Path("/nonexistent"), env={}, grpc_port=4000, web_port=0)
    tested = stack.code_server_argv(host="0.0.0.0")
    assert cmd == ["dagster", *tested[1:]], (cmd, tested)
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in text
    assert "HAKOBU_CONFIG_DIR=/opt/hakobu/config" in text
    assert not re.search(r"(?i)(password|secret|token|key)\s*=", text), "no secret in the image"
