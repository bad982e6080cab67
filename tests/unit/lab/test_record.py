"""The lab record (``lab.json``) and what ``lab info`` makes of it."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from porterlb import errors
from porterlb.lab import credentials, lab, plan, processes

DIRECTORY = Path("/run/porterlb/labs/demo")


def record(ipv6: bool = True) -> lab.Record:
    layout = plan.build("demo", 2, ipv6=ipv6)
    running = tuple(
        processes.Process(role=role, pid=100 + n, started=5000 + n, log=DIRECTORY / f"{n}.log")
        for n, role in enumerate(["control-plane", "manager", "speaker/demo-w1", "kube-proxy"])
    )
    return lab.Record(
        plan=layout,
        directory=DIRECTORY,
        processes=running,
        metrics={
            "manager": "127.0.0.1:4000",
            "speaker/demo-w1": "127.0.0.1:4001",
            "speaker/demo-w2": "127.0.0.1:4002",
        },
    )


@pytest.mark.parametrize("ipv6", [pytest.param(True, id="dual"), pytest.param(False, id="v4")])
def test_record_survives_its_json_file(ipv6):
    original = record(ipv6)
    text = json.dumps(original.to_json())
    assert lab.Record.from_json(json.loads(text), DIRECTORY) == original


def test_a_lab_whose_workers_run_kubelets_has_real_nodes_with_or_without_a_release():
    bare = record()
    kubelet = processes.Process(
        role="kubelet/demo-w1", pid=200, started=6000, log=DIRECTORY / "kubelet.log"
    )
    real = dataclasses.replace(bare, processes=(*bare.processes, kubelet))
    assert not bare.real_nodes
    assert real.real_nodes
    assert dataclasses.replace(real, release="porterlb").real_nodes


def test_info_has_what_the_e2e_tests_need():
    described = lab.describe(record(), alive=lambda p: p.role != "manager")
    assert described["kubeconfig"] == "/run/porterlb/labs/demo/control-plane/kubeconfig"
    assert described["router_netns"] == "plb-demo-router"
    assert described["client_netns"] == "plb-demo-client"
    assert described["eip"] == {"name": "lab-demo", "address": "198.18.64.200-198.18.64.250"}
    assert [pool["name"] for pool in described["eips"]] == ["lab-demo", "lab-demo-v6"]
    assert described["nodes"][1] == {
        "name": "demo-w2",
        "netns": "plb-demo-w2",
        "interface": "eth0",
        "ipv4": "198.18.64.12",
        "ipv6": "2001:db8:20:1::12",
        "mac": "02:70:6c:20:01:02",
        "metrics": "127.0.0.1:4002",
        "metrics_netns": "plb-demo-w2",
        "processes": {},
    }
    assert described["nodes"][0]["processes"] == {
        "speaker": {"pid": 102, "alive": True, "log": str(DIRECTORY / "2.log")}
    }
    assert described["router"]["interface"] == plan.ROUTER_LAN_IF
    alive = {p["role"]: p["alive"] for p in described["processes"]}
    assert alive == {
        "control-plane": True,
        "manager": False,
        "speaker/demo-w1": True,
        "kube-proxy": True,
    }
    json.dumps(described)  # plain JSON all the way down


def test_summary_names_the_exited_processes():
    text = lab.summary(lab.describe(record(), alive=lambda p: p.role != "manager"))
    assert "kubeconfig /run/porterlb/labs/demo/control-plane/kubeconfig" in text
    assert "node demo-w1: netns plb-demo-w1 eth0" in text
    assert "exited: manager" in text


def test_load_tells_an_absent_lab_from_a_half_built_one(tmp_path):
    assert lab.load("demo", root=tmp_path) is None
    (tmp_path / "demo").mkdir()
    with pytest.raises(errors.PorterlbError, match=r"no lab\.json"):
        lab.load("demo", root=tmp_path)
    (tmp_path / "demo" / lab.RECORD).write_text(json.dumps(record().to_json()))
    assert lab.load("demo", root=tmp_path) == lab.Record.from_json(
        record().to_json(), tmp_path / "demo"
    )


def test_names_are_checked_before_anything_is_touched(tmp_path):
    with pytest.raises(errors.InvalidSpec):
        lab.down("../etc", root=tmp_path)


def test_headline_is_one_line_with_the_pools_and_the_kubeconfig():
    line = lab.headline(record(), elapsed=11.26)
    assert "\n" not in line
    assert line.startswith("lab demo ready in 11.3 s: 2 workers, Eip lab-demo 198.18.64.200-")
    assert line.endswith("kubeconfig /run/porterlb/labs/demo/control-plane/kubeconfig")


def test_a_speaker_reaches_the_api_on_the_router_and_a_manager_on_loopback(tmp_path):
    layout = plan.build("demo", 2)
    cluster = {"server": "https://127.0.0.1:40000", "certificate-authority": "/ca.crt"}
    for role in ("manager", "speaker"):  # as credentials.grant writes them
        own = credentials.kubeconfig(tmp_path, role)
        own.parent.mkdir(exist_ok=True)
        own.write_text(json.dumps({"clusters": [{"name": "lab", "cluster": cluster}]}))
    manager = credentials.kubeconfig(tmp_path, "manager")
    assert lab.kubeconfig_for(layout, tmp_path, "manager/1") == manager
    speaker = lab.kubeconfig_for(layout, tmp_path, "speaker/demo-w1")
    assert speaker != credentials.kubeconfig(tmp_path, "speaker")
    [entry] = yaml.safe_load(speaker.read_text())["clusters"]
    assert entry["cluster"] == {
        "server": f"https://{layout.router_lan.ipv4.ip}:6443",
        "certificate-authority": "/ca.crt",
    }
    assert lab.kubeconfig_for(layout, tmp_path, "speaker/demo-w2") == speaker  # shared


def test_a_speakers_metrics_are_in_its_workers_namespace():
    layout = plan.build("demo", 2)
    assert lab.metrics_netns(layout, "speaker/demo-w2") == "plb-demo-w2"
    assert lab.metrics_netns(layout, "manager/1") is None


def test_info_lists_each_real_nodes_kubelet_runtime_and_kube_proxy():
    layout = plan.build("demo", 2, ipv6=False)
    roles = ["kubelet/demo-w1", "containerd/demo-w1", "kube-proxy/demo-w1", "kubelet/demo-w2"]
    running = tuple(
        processes.Process(role=role, pid=200 + n, started=1, log=DIRECTORY / f"{n}.log")
        for n, role in enumerate(roles)
    )
    real = lab.Record(plan=layout, directory=DIRECTORY, processes=running, metrics={})
    first, second = lab.describe(real, alive=lambda p: p.pid != 202)["nodes"]
    assert first["processes"] == {
        "kubelet": {"pid": 200, "alive": True, "log": str(DIRECTORY / "0.log")},
        "containerd": {"pid": 201, "alive": True, "log": str(DIRECTORY / "1.log")},
        "kube-proxy": {"pid": 202, "alive": False, "log": str(DIRECTORY / "2.log")},
    }
    assert list(second["processes"]) == ["kubelet"]
