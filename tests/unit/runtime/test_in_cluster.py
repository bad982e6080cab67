import re

import pytest

from porterlb.kube import client as kube_client


@pytest.mark.parametrize(
    ("host", "token", "named"),
    [
        pytest.param("127.0.0.1", False, "/token", id="no-token-file"),
        pytest.param(None, True, "$KUBERNETES_SERVICE_HOST", id="no-service-env"),
    ],
)
def test_what_is_missing_is_named(tmp_path, host, token, named):
    if token:
        (tmp_path / "token").write_text("t")
    in_cluster = kube_client.InCluster(directory=tmp_path, host=host, port="443")
    with pytest.raises(kube_client.NoConfig, match=f"{re.escape(named)}.*--kubeconfig"):
        kube_client.connect(None, in_cluster=in_cluster)


def test_the_namespace_comes_from_the_service_account(tmp_path):
    in_cluster = kube_client.InCluster(directory=tmp_path)
    assert in_cluster.namespace() is None
    (tmp_path / "namespace").write_text("porterlb-system")
    assert in_cluster.namespace() == "porterlb-system"


def test_environ(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    found = kube_client.InCluster.from_environ(env, tmp_path)
    assert found == kube_client.InCluster(directory=tmp_path, host="fd00::1", port="443")
