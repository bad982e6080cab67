"""The command line as a pod runs it: what it imports, its defaults, its start-up errors."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from porterlb import cli

FORBIDDEN = ("porterlb.lab", "cryptography", "tests", "bench")
"""What the roles must never load: the lab, its dependencies, the tests and benches."""


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("POD_NAMESPACE", "HOST_IP")}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env={**base, **(env or {})}
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["manager", "--help"], id="manager"),
        pytest.param(["speaker", "--node-name", "w1", "--help"], id="speaker"),
        pytest.param(["manager", "--kubeconfig", "/nonexistent"], id="manager-starting"),
    ],
)
def test_the_roles_import_nothing_of_the_lab(argv):
    imported = _imports(run("-X", "importtime", "-m", "porterlb", *argv))
    assert "porterlb.cli" in imported
    assert [m for m in imported if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)] == []


SPEAKER_NEVER = (
    "aiohttp",
    "pyroute2.ndb",
    "pyroute2.ipdb",
    "pyroute2.conntrack",
    "sqlite3",
    "h2",
    "hpack",
    "hyperframe",
)
"""What a speaker does not load (its memory budget, bench/speaker_scale.py): aiohttp is the
manager's transport; of pyroute2, only its rtnetlink client (porterlb.l2.netlink); no HTTP/2
(h2, hpack, hyperframe: porterlb.kube.transport)."""


def _imports(done: subprocess.CompletedProcess[str]) -> set[str]:
    return {
        line.rpartition("|")[2].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


def _kubeconfig_without_namespace(tmp_path) -> str:
    """A kubeconfig whose context names no namespace (and whose server never answers)."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    return str(kubeconfig)


LOADED = "modules loaded at exit:"

STARTING = (
    "import atexit, runpy, sys\n"
    f"atexit.register(lambda: print({LOADED!r}, *sorted(sys.modules), file=sys.stderr))\n"
    "runpy.run_module('porterlb', run_name='__main__', alter_sys=True)\n"
)
"""``python -m porterlb`` that also lists the modules it holds when it exits (importtime lists
every import tried, also one that failed as it should: h2's, porterlb.kube.transport)."""


def _loaded(done: subprocess.CompletedProcess[str]) -> set[str]:
    return {m for line in done.stderr.splitlines() if line.startswith(LOADED) for m in line.split()}


def _starting(role: list[str], tmp_path) -> subprocess.CompletedProcess[str]:
    """`role` started as far as its API client, which it builds before it stops for want of a
    namespace (exit 2)."""
    kubeconfig = _kubeconfig_without_namespace(tmp_path)
    done = run("-X", "importtime", "-c", STARTING, *role, "--kubeconfig", kubeconfig)
    assert done.returncode == 2 and "no namespace" in done.stderr, done.stderr[-500:]
    return done


def test_a_speaker_loads_no_aiohttp_no_http2_and_of_pyroute2_only_rtnetlink(tmp_path):
    loaded = _loaded(_starting(["speaker", "--node-name", "w1"], tmp_path))
    assert {"porterlb.speaker.agent", "porterlb.l2.netlink", "pyroute2.iproute.linux"} <= loaded
    assert "httpcore2" in loaded  # its transport, built with the client
    assert sorted(m for m in loaded if m.startswith(SPEAKER_NEVER)) == []


def test_a_client_loads_no_http2_and_leaves_it_importable(tmp_path):
    """h2 stays out while the client's TLS context and transport load httpcore2 (~3.5 MB),
    and whatever imports it afterwards still gets it (porterlb.kube.transport)."""
    script = (
        "import pathlib, sys\n"
        "from porterlb.kube import client\n"
        "client.connect(pathlib.Path(sys.argv[1]), via='httpx2')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('h2', 'hpack', 'hyperframe'))))\n"
        "print('httpcore2' in sys.modules)\n"
        "import h2.connection\n"
        "print('h2.connection' in sys.modules)\n"
    )
    done = run("-c", script, _kubeconfig_without_namespace(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["[]", "True", "True", ""]


def test_the_manager_sends_over_aiohttp(tmp_path):
    imported = _imports(_starting(["manager"], tmp_path))
    assert {"porterlb.manager.controller", "porterlb.kube.aiohttp_transport"} <= imported


def test_lab_is_listed_and_loaded_when_asked():
    assert "lab" in run("-m", "porterlb", "--help").stdout
    assert "build-control-plane" in run("-m", "porterlb", "lab", "--help").stdout


def test_version():
    done = run("-m", "porterlb", "--version")
    assert done.stdout.strip() == f"porterlb {cli.version()}"


@pytest.mark.parametrize("role", [["manager"], ["speaker", "--node-name", "w1"]])
def test_no_configuration_is_one_line_and_exit_code_2(role):
    done = run("-m", "porterlb", *role, "-v")  # -v after the role is accepted
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert "no Kubernetes configuration" in line and "--kubeconfig" in line


def test_no_namespace_is_one_line_and_never_default(tmp_path):
    kubeconfig = _kubeconfig_without_namespace(tmp_path)
    done = run("-m", "porterlb", "manager", "--kubeconfig", kubeconfig)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "no namespace" in line and "POD_NAMESPACE" in line


@pytest.mark.parametrize(
    ("env", "want"),
    [
        pytest.param({}, [], id="unknown"),
        pytest.param({"HOST_IP": "198.18.0.2"}, ["198.18.0.2"], id="host-ip"),
        pytest.param(
            {"HOST_IPS": "198.18.0.2,2001:db8::2", "HOST_IP": "198.18.0.2"},
            ["198.18.0.2", "2001:db8::2"],
            id="dual-stack-host-ips-first",
        ),
    ],
)
def test_host_ips(env, want):
    assert cli.host_ips(env) == want


def test_the_first_signal_stops_gracefully_and_a_second_at_once():
    steps: list[str] = []
    graceful: list[Callable[[], None]] = []

    async def main() -> None:
        began = asyncio.Event()
        graceful.append(began.set)
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(30):
            await began.wait()
        steps.append("draining")
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(30):  # a TimeoutError here fails the test
            await asyncio.Event().wait()

    cli._run_until_signalled(main(), graceful=graceful)
    assert steps == ["draining"]


def test_without_a_graceful_stop_the_first_signal_cancels():
    async def main() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(30):
            await asyncio.Event().wait()

    cli._run_until_signalled(main())  # returns: cancelled, not timed out


def test_the_speakers_drain_timeout_must_not_be_negative():
    done = run("-m", "porterlb", "speaker", "--node-name", "w1", "--drain-timeout", "-1")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "porterlb speaker: error: --drain-timeout must be 0 or more seconds, got -1.0"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("-1", "-1 must be a number of seconds >= 0 (0: off)", id="negative"),
        pytest.param("nan", "nan must be a number of seconds >= 0 (0: off)", id="nan"),
        pytest.param("soon", "'soon' is not a number of seconds", id="not-a-number"),
    ],
)
def test_a_bad_audit_interval_is_a_usage_error_naming_the_flag(value, message):
    done = run("-m", "porterlb", "speaker", "--node-name", "w1", "--audit-interval", value)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"argument --audit-interval: {message}" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("30", 30.0), ("2.5", 2.5)])
def test_an_audit_interval_parses(value, expected):
    args = cli._parser(["speaker"]).parse_args(
        ["speaker", "--node-name", "w1", "--audit-interval", value]
    )
    assert args.audit_interval == expected
