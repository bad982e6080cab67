"""The kube-proxy stand-in process: Services and EndpointSlices in, nftables DNAT out.

``python -m porterlb.lab.kubeproxy_agent --kubeconfig K --node NAME=NETNS ...`` is one process
for the whole lab, where a cluster runs one kube-proxy per node: it lives in the host namespace,
next to the API server on loopback, and reaches each worker's ruleset with ``nft`` run in the
worker's namespace. It is not a ``porterlb`` subcommand because this module imports ~0.7 s of
CPU where the whole CLI costs ~2 s, on the path of every ``lab up``.

Two reflectors keep Services and EndpointSlices cached; any change marks the state dirty (of
a Service, only a change of its spec or status: kube-proxy ignores annotations and labels
too, and recomputing 1,000 Services' forwards after each announcing record of a 100-IP
failover cost 0.65 CPU-seconds of the lab's two cores in ``bench-failover``), and one sync
task recomputes every node's forwards (:func:`porterlb.lab.kubeproxy_rules.forwards`) and
rewrites the tables that differ from what it last wrote (:func:`porterlb.lab.kubeproxy.sync`,
one atomic ``nft -f`` each). Changes that arrive while a sync runs are folded into the next
one: it always reads the newest cache.

After the first complete sync (every worker has its table, empty or not) it creates the
``--ready-file``, which is what ``lab up`` waits for. SIGTERM ends it at once (the default
action): it holds nothing but the worker tables, which go with the lab's namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import lightkube
from lightkube.resources.discovery_v1 import EndpointSlice

from porterlb import errors
from porterlb.kube import client as kube_client
from porterlb.kube import reflector, resources
from porterlb.lab import kubeproxy, kubeproxy_rules

log = logging.getLogger(__name__)

RETRY_DELAY: Final = 1.0
"""Seconds before a failed ``nft`` run is retried; it fails only while a namespace is being
torn down or the tool is missing, neither of which a faster retry would fix."""


class Agent:
    """Keeps the DNAT table of every worker namespace in ``nodes`` (node name -> netns)."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        nodes: Mapping[str, str],
        *,
        ready_file: Path | None = None,
    ) -> None:
        self.nodes = dict(nodes)
        self.ready_file = ready_file
        self._dirty = asyncio.Event()
        self._applied: dict[str, list[kubeproxy.Forward]] = {}
        self._read: dict[str, tuple[object, object]] = {}
        """Service key -> the spec and status its forwards were last computed from."""
        self.services = reflector.Reflector(
            client, resources.Service, on_change=self._service_changed, name="services"
        )
        self.slices = reflector.Reflector(
            client, EndpointSlice, on_change=self._changed, name="endpointslices"
        )

    async def run(self) -> None:
        """Watch and sync forever; only cancellation ends it."""
        async with asyncio.TaskGroup() as group:
            for source in (self.services, self.slices):
                group.create_task(source.run(), name=f"kube-proxy/watch/{source.name}")
            for source in (self.services, self.slices):
                await source.synced.wait()
            self._dirty.set()
            group.create_task(self._sync_forever(), name="kube-proxy/sync")

    def _changed(self, key: str) -> None:
        self._dirty.set()

    def _service_changed(self, key: str) -> None:
        obj = self.services.cache.get(key)
        if obj is None:
            self._read.pop(key, None)
        else:
            read = (obj.get("spec"), obj.get("status"))
            if self._read.get(key) == read:
                return  # metadata only (an annotation, a label): no forward reads it
            self._read[key] = read
        self._dirty.set()

    async def _sync_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if await self._sync() and self.ready_file and not self.ready_file.exists():
                self.ready_file.write_text("synced\n")
                log.info("every worker table written; ready")

    async def _sync(self) -> bool:
        """Rewrite the tables that changed; True if every node now has what it should.

        A failed node is retried once, :data:`RETRY_DELAY` later, however many failed.
        """
        services = list(self.services.cache.values())
        slices = list(self.slices.cache.values())
        failed = []
        for node, namespace in self.nodes.items():
            wanted = kubeproxy_rules.forwards(services, slices, node)
            if self._applied.get(node) == wanted:
                continue
            try:
                await asyncio.to_thread(kubeproxy.sync, namespace, wanted)
            except errors.PorterlbError as error:
                log.warning("node %s (netns %s): %s", node, namespace, error)
                failed.append(node)
                continue
            self._applied[node] = wanted
            log.info("node %s: %s", node, describe(wanted))
        if failed:
            log.warning("retrying nodes %s in %.1f s", ", ".join(failed), RETRY_DELAY)
            asyncio.get_running_loop().call_later(RETRY_DELAY, self._dirty.set)
        return not failed


def describe(forwards: Sequence[kubeproxy.Forward]) -> str:
    """One log phrase: ``2 forwards: 198.18.4.200:80/TCP -> 198.18.4.11:8080, ...``."""
    if not forwards:
        return "no forwards"
    shown = ", ".join(
        f"{_host(f.lb_ip)}:{f.port}/{f.protocol} -> {_host(f.backend_ip)}:{f.backend_port}"
        for f in forwards
    )
    return f"{len(forwards)} forwards: {shown}"


def parse_node(text: str) -> tuple[str, str]:
    """``NAME=NETNS`` from the command line; raises InvalidSpec naming the bad argument."""
    name, sep, namespace = text.partition("=")
    if not sep or not name or not namespace:
        raise errors.InvalidSpec(f"--node {text!r}: expected NODE_NAME=NETNS")
    return name, namespace


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stand-in until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument(
        "--node",
        dest="nodes",
        action="append",
        required=True,
        type=_node_argument,
        metavar="NODE=NETNS",
        help="a worker: its Node name and network namespace (once per worker)",
    )
    parser.add_argument("--ready-file", type=Path, help="created after the first full sync")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise

    async def serve() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            await Agent(client, dict(args.nodes), ready_file=args.ready_file).run()

    asyncio.run(serve())
    return 0


def _node_argument(text: str) -> tuple[str, str]:
    try:
        return parse_node(text)
    except errors.InvalidSpec as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _host(ip: kubeproxy_rules.IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


if __name__ == "__main__":
    sys.exit(main())
