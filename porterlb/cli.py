"""``porterlb``: one command, one subcommand per role.

porterlb manager [--kubeconfig PATH]      the IP address manager
porterlb lab build-control-plane          build kube-apiserver + etcd into the cache
porterlb lab control-plane --dir DIR      run a real control plane until interrupted
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from porterlb.kube import client as kube_client
from porterlb.lab import binaries, controlplane
from porterlb.manager import ipam


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="porterlb", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    roles = parser.add_subparsers(required=True, metavar="COMMAND")

    manager = roles.add_parser("manager", help="run the IP address manager")
    manager.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account")
    manager.add_argument("--workers", type=int, default=16, help="Services reconciled at once")
    manager.set_defaults(run=_run_manager)

    lab = roles.add_parser("lab", help="the real control plane and namespace lab")
    lab_commands = lab.add_subparsers(required=True, metavar="LAB_COMMAND")
    build = lab_commands.add_parser("build-control-plane", help="build kube-apiserver and etcd")
    build.set_defaults(run=_run_build)
    plane = lab_commands.add_parser("control-plane", help="run etcd + kube-apiserver on loopback")
    plane.add_argument("--dir", type=Path, help="where to write kubeconfig (default: a temp dir)")
    plane.set_defaults(run=_run_control_plane)
    return parser


def _run_manager(args: argparse.Namespace) -> int:
    async def manage() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            await ipam.Ipam(client, workers=args.workers).run()

    with _SignalScope():
        asyncio.run(manage())
    return 0


def _run_build(args: argparse.Namespace) -> int:
    print(binaries.build())
    return 0


def _run_control_plane(args: argparse.Namespace) -> int:
    scratch = None if args.dir else tempfile.TemporaryDirectory(prefix="porterlb-cp-")
    directory = args.dir or Path(scratch.name) / "control-plane"  # type: ignore[union-attr]
    try:
        with _SignalScope(), controlplane.ControlPlane(directory) as endpoints:
            print(
                f"control plane ready: {endpoints.server} kubeconfig={endpoints.kubeconfig}",
                flush=True,
            )
            signal.pause()
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


class _Stop(Exception):
    """SIGTERM, turned into an exception so that every with-block cleans up."""


class _SignalScope:
    """Turn SIGTERM into an exception for the duration of a with-block; exit quietly on it."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, kind: object, error: object, tb: object) -> bool:
        signal.signal(signal.SIGTERM, self._old)
        return isinstance(error, (_Stop, KeyboardInterrupt))

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise _Stop()


if __name__ == "__main__":
    sys.exit(main())
