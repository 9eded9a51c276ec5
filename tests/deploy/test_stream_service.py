"""deploy/k8s/stream.yaml and deploy/ecs/stream.yaml: `hakobu stream` as a long-running
service, one per cluster — checked as far as this machine can (no Kubernetes cluster, no AWS
account): parsed into the Kubernetes client's model and validated against botocore's ECS API
model; the command is one the CLI accepts; one replica, never two at once; the grace period."""

from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import validate_parameters

from hakobu.cli.entry import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRACE_S = 120        # SIGTERM → flush, checkpoint, exit 0; room for a merge in flight


def _cli_accepts(argv: list[str]) -> None:
    assert argv[:2] == ["hakobu", "stream"], argv
    args = build_parser().parse_args(argv[1:])
    assert args.cluster == "studio-east" and not args.once and args.for_seconds is None


def test_k8s_stream_deployment_runs_one_reader_per_cluster_with_a_grace_period():
    kubernetes = pytest.importorskip("kubernetes")
    [doc] = list(yaml.safe_load_all((DEPLOY / "k8s" / "stream.yaml").read_text()))
    assert (doc["apiVersion"], doc["kind"]) == ("apps/v1", "Deployment")
    api = kubernetes.client.ApiClient()
    d = api._ApiClient__deserialize(doc, "V1Deployment")       # the client's own model
    assert d.spec.replicas == 1
    assert d.spec.strategy.type == "Recreate"       # a rollout never runs two readers
    pod = d.spec.template.spec
    assert pod.restart_policy == "Always" and pod.termination_grace_period_seconds == GRACE_S
    [c] = pod.containers
    _cli_accepts(c.command)
    assert c.args is None
    assert {e.config_map_ref.name for e in c.env_from if e.config_map_ref} == {"hakobu-env"}
    assert {e.secret_ref.name for e in c.env_from if e.secret_ref} == {"hakobu-secrets"}
    assert not c.env, "settings and secrets come from the ConfigMap and the Secret"
    assert d.spec.selector.match_labels.items() <= d.spec.template.metadata.labels.items()


def test_ecs_stream_service_is_valid_for_the_ecs_api_and_never_doubles():
    doc = yaml.safe_load((DEPLOY / "ecs" / "stream.yaml").read_text())
    assert set(doc) == {"task_definition", "service"}
    model = botocore.session.get_session().get_service_model("ecs")
    validate_parameters(doc["task_definition"],
                        model.operation_model("RegisterTaskDefinition").input_shape)
    validate_parameters(doc["service"], model.operation_model("CreateService").input_shape)
    [c] = doc["task_definition"]["containerDefinitions"]
    _cli_accepts(c["command"])
    assert c["stopTimeout"] == GRACE_S and c["essential"] is True
    assert all(s["valueFrom"].startswith("arn:aws:") for s in c["secrets"])
    assert not [e for e in c["environment"] if "PASSWORD" in e["name"]], "secrets only"
    svc = doc["service"]
    assert svc["desiredCount"] == 1
    assert svc["deploymentConfiguration"] == {"maximumPercent": 100, "minimumHealthyPercent": 0}
    assert svc["taskDefinition"] == doc["task_definition"]["family"]
