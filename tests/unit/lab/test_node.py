"""The real-node lab's pure parts: the image archive, the configurations, the cgroup and
tunable bookkeeping, on temporary directories (no root, no kernel)."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from porterlb.lab import netns
from porterlb.lab.node import images, kubelet, mountns, nodelab, podnet, runtime


def test_the_image_archive_is_an_oci_layout_naming_the_lab_image(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF not really")
    archive = images.write(tmp_path / "image.tar", busybox=busybox)
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    for name, blob in files.items():
        if name.startswith("blobs/sha256/"):
            assert name.rpartition("/")[2] == hashlib.sha256(blob).hexdigest()
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == images.NAME
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    assert config["config"]["Entrypoint"] == list(images.SLEEP)
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as root:
        members = {m.name: m for m in root.getmembers()}
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].linkname == "busybox"


def test_the_image_needs_busybox(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="busybox-static"):
        images.write(tmp_path / "image.tar", busybox=tmp_path / "absent")


def test_containerd_keeps_every_path_of_its_own_and_restricts_oom_scores(tmp_path: Path) -> None:
    paths = runtime.Paths(tmp_path / "w1")
    cni = podnet.cni_config([ipaddress.IPv4Network("198.19.0.0/24")], paths.ipam)
    paths.make(cni)
    config = tomllib.loads(paths.config.read_text())
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == images.NAME
    owned = [
        config["root"],
        config["state"],
        config["grpc"]["address"],
        config["plugins"]["io.containerd.internal.v1.opt"]["path"],
        cri["containerd"]["runtimes"]["runc"]["options"]["Root"],
        cri["cni"]["conf_dir"],
    ]
    assert all(Path(path).is_relative_to(tmp_path / "w1") for path in owned)
    assert json.loads((paths.cni_conf / f"10-{podnet.NETWORK}.conflist").read_text()) == cni


def test_the_kubelet_runs_on_cgroup_v1_with_its_own_root_and_reaches_the_lab_api(
    tmp_path: Path,
) -> None:
    node = kubelet.Node(
        name="lab-w1",
        ip="198.18.0.11",
        directory=tmp_path,
        cgroup_root=kubelet.cgroup_root("lab-w1"),
        runtime_socket=tmp_path / "containerd.sock",
        server="https://198.18.0.1:6443",
        token="t",
        ca=tmp_path / "ca.crt",
    )
    config = kubelet.configuration(node)
    assert config["failCgroupV1"] is False
    assert config["cgroupRoot"] == "/porterlb-lab-w1"
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    kubelet.write(node)
    (cluster,) = yaml.safe_load(node.kubeconfig.read_text())["clusters"]
    assert cluster["cluster"]["tls-server-name"] == kubelet.TLS_SERVER_NAME
    assert cluster["cluster"]["server"] == "https://198.18.0.1:6443"
    assert f"--cert-dir={tmp_path / 'certs'}" in kubelet.argv(Path("/bin/kubelet"), node)


def test_cgroup_roots_are_made_in_every_hierarchy_and_removed_deepest_first(
    tmp_path: Path,
) -> None:
    for hierarchy in ("cpu", "memory", "pids"):
        (tmp_path / hierarchy).mkdir()
    kubelet.create_cgroup_root("/porterlb-lab-w1", tmp_path)
    (tmp_path / "memory" / "porterlb-lab-w1" / "kubepods" / "besteffort").mkdir(parents=True)
    (tmp_path / "cpu" / "porterlb-lab-w10").mkdir()
    (tmp_path / "cpu" / "porterlb-lab-b-w1").mkdir()
    assert nodelab.cgroup_roots("lab", tmp_path) == ["/porterlb-lab-w1", "/porterlb-lab-w10"]
    kubelet.remove_cgroup_root("/porterlb-lab-w1", tmp_path)
    assert not any(path.name == "porterlb-lab-w1" for path in tmp_path.glob("*/*"))
    assert nodelab.cgroup_roots("lab", tmp_path) == ["/porterlb-lab-w10"]


def test_a_nodes_pods_weigh_as_much_as_a_niced_lab_process(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    kubelet.create_cgroup_root("/porterlb-lab-w1", tmp_path)
    kubelet.weigh_cgroup_root("/porterlb-lab-w1", tmp_path)
    shares = (tmp_path / "cpu" / "porterlb-lab-w1" / "cpu.shares").read_text()
    assert int(shares) == kubelet.CPU_SHARES >= 9548  # sched_prio_to_weight[nice -10]


def test_the_holder_covers_every_tunable_the_kubelet_writes_with_the_value_it_wants(
    tmp_path: Path,
) -> None:
    """A kubelet reading the value it wants writes nothing: kubelets writing shared covers
    raced (one read a cover another had just truncated)."""
    script = mountns.holder_argv(tmp_path / "covers")[-1]
    assert set(mountns.KUBELET_WANTS) == set(mountns.COVERED)
    for key, wanted in mountns.KUBELET_WANTS.items():
        cover = tmp_path / "covers" / key.replace("/", ".")
        assert cover.read_text() == f"{wanted}\n"
        assert f"mount --bind {cover} /proc/sys/{key}" in script


def test_a_changed_host_tunable_is_named_with_the_value_it_had(tmp_path: Path) -> None:
    proc_sys = tmp_path / "sys"
    for key in mountns.COVERED:
        (proc_sys / key).parent.mkdir(parents=True, exist_ok=True)
        (proc_sys / key).write_text("7\n")
    mountns.check_host(dict.fromkeys(mountns.COVERED, "7"), proc_sys)
    (proc_sys / "kernel/panic_on_oops").write_text("1\n")
    with pytest.raises(netns.LabError, match=r"kernel/panic_on_oops=1 \(was 7\)"):
        mountns.check_host(dict.fromkeys(mountns.COVERED, "7"), proc_sys)


def test_a_command_entering_the_namespace_refuses_to_run_where_a_tunable_is_uncovered(
    tmp_path: Path,
) -> None:
    """The guard runs here, in the test's own mount namespace, where nothing is covered."""
    marker = tmp_path / "ran"
    argv = mountns.enter_argv(1, "unused")
    guard = argv[argv.index("--") + 1 :]
    done = subprocess.run([*guard, "touch", str(marker)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "/proc/sys/vm/overcommit_memory is not covered" in done.stderr
    assert not marker.exists()
