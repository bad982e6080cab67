"""The Helm chart, rendered by a real helm: lint, the static manifest, the alert rules.

No API server here (tests/integration/test_install.py applies what the chart renders); these
need the helm and promtool that ``porterlb lab build-tools`` puts in the cache.
"""

from __future__ import annotations

import importlib.metadata
import subprocess

import pytest
import yaml

from porterlb import cli, errors
from porterlb.lab import binaries, chart

pytestmark = pytest.mark.integration

EVERYTHING = {
    "prometheus.podMonitor.enabled": "true",
    "prometheus.prometheusRule.enabled": "true",
    "prometheus.metricsServices": "true",
    "prometheus.scrapeAnnotations": "true",
    "namespace.create": "true",
}
"""Every optional object of the chart turned on."""


def _kinds(text: str) -> list[str]:
    return sorted(doc["kind"] for doc in chart.documents(text))


def test_the_static_manifest_is_the_chart_rendered():
    assert chart.MANIFEST.read_text() == chart.static_manifest(), (
        f"{chart.MANIFEST} differs from the chart: run scripts/render-manifests.sh"
    )


@pytest.mark.parametrize(
    "values", [{}, chart.STATIC_VALUES, EVERYTHING], ids=["defaults", "static", "everything"]
)
def test_helm_lint_passes(values):
    argv = [str(binaries.helm()), "lint", "--strict", str(chart.CHART)]
    argv += ["--namespace", chart.NAMESPACE, "--kube-version", chart.KUBE_VERSION]
    for key, value in values.items():
        argv += ["--set", f"{key}={value}"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_chart_ships_the_package_version():
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == importlib.metadata.version("porterlb")


def test_the_crds_are_the_ones_in_deploy_crds():
    crds = {
        d["metadata"]["name"]: d
        for d in chart.documents(chart.template())
        if d["kind"] == "CustomResourceDefinition"
    }
    sources = sorted((chart.ROOT / "deploy/crds").glob("*.yaml"))
    assert sorted(crds) == [path.name.removesuffix(".yaml") for path in sources]
    for path in sources:
        (source,) = chart.documents(path.read_text())
        crd = crds[source["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_defaults_render_each_role_and_no_optional_object():
    assert _kinds(chart.template()) == sorted(
        ["ClusterRole", "ClusterRoleBinding"] * 2
        + ["Role", "RoleBinding", "ServiceAccount"] * 2
        + ["CustomResourceDefinition"] * 2
        + ["DaemonSet", "Deployment", "PodDisruptionBudget", "Secret"]
    )


def test_the_static_manifest_has_its_namespace_and_no_secret():
    objects = chart.documents(chart.static_manifest())
    (namespace,) = [d for d in objects if d["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "porterlb-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert not [d for d in objects if d["kind"] == "Secret"]
    assert all(d["metadata"].get("namespace") in (None, "porterlb-system") for d in objects)


def test_each_rendering_of_the_chart_draws_its_own_heartbeat_key():
    def key() -> str:
        (secret,) = [d for d in chart.documents(chart.template()) if d["kind"] == "Secret"]
        return str(secret["data"]["key"])

    assert key() != key()


@pytest.mark.parametrize(
    ("values", "creates", "flag"),
    [({}, False, True), ({"heartbeat.secretCreatedBy": "manager"}, True, False)],
    ids=["chart-makes-the-secret", "manager-makes-the-secret"],
)
def test_the_manager_may_create_secrets_only_when_it_makes_the_key(values, creates, flag):
    objects = chart.documents(chart.template(values))
    (role,) = [
        d for d in objects if d["kind"] == "Role" and d["metadata"]["name"].endswith("manager")
    ]
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert any("create" in r["verbs"] for r in secret_rules) is creates
    (deployment,) = [d for d in objects if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--no-create-heartbeat-secret" in args) is flag


def test_the_alert_rules_pass_promtool(tmp_path):
    objects = chart.documents(chart.template({"prometheus.prometheusRule.enabled": "true"}))
    (rule,) = [d for d in objects if d["kind"] == "PrometheusRule"]
    alerts = [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert alerts == [
        "PorterlbAddressPoolUsage75Percent",
        "PorterlbAddressPoolUsage85Percent",
        "PorterlbAddressPoolUsage95Percent",
        "PorterlbAddressPoolExhausted",
        "PorterlbSpeakerFenced",
        "PorterlbSilentNodes",
        "PorterlbNoLeader",
        "PorterlbEventsDropped",
    ]
    rules = tmp_path / "porterlb.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(
        [str(binaries.promtool()), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_an_unknown_secret_maker_is_refused_by_name():
    with pytest.raises(
        errors.InvalidSpec, match='secretCreatedBy must be chart or manager, not "me"'
    ):
        chart.template({"heartbeat.secretCreatedBy": "me"})


@pytest.mark.parametrize(("kind", "role"), [("Deployment", "manager"), ("DaemonSet", "speaker")])
def test_every_argument_the_chart_passes_is_one_the_role_takes(kind, role, monkeypatch):
    (workload,) = [d for d in chart.documents(chart.template()) if d["kind"] == kind]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == role
    for variable in container["env"]:  # what the Downward API sets in the pod
        monkeypatch.setenv(variable["name"], variable.get("value", "x"))
    parsed = cli._parser(container["args"]).parse_args(container["args"])
    assert parsed.role == role
