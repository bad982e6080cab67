"""The real control plane for integration tests: one per session, a namespace per test.

Eips are cluster-scoped and shared by every test of the session, so each test gets its own
address block (:func:`block`) and binds its pools to its own namespace; tests that need a
default pool delete it before they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import lightkube
import pytest
import pytest_asyncio
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node
from lightkube.types import PatchType

from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import controlplane, crds
from porterlb.manager import controller
from tests.conftest import cancelled_connections_collected

_blocks = itertools.count(1)


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """The session's control plane itself (for tests that restart the API server)."""
    running = controlplane.ControlPlane(tmp_path_factory.mktemp("control-plane") / "cp")
    with running:
        yield running


@pytest.fixture(scope="session")
def control_plane(plane: controlplane.ControlPlane) -> controlplane.Endpoints:
    return plane.endpoints


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(control_plane: controlplane.Endpoints) -> AsyncIterator[lightkube.AsyncClient]:
    async with kube_client.connect(control_plane.kubeconfig) as api:
        await crds.install(api)
        yield api


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(client: lightkube.AsyncClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    # Without a controller-manager a namespace never finishes terminating; leave it be.


def block() -> str:
    """A /24 that no other test of this session uses: 198.18.<n>.0/24 (n < 256)."""
    n = next(_blocks)
    assert n < 256, "out of test address blocks"
    return f"198.18.{n}"


def v6(net: str) -> str:
    """The IPv6 prefix that goes with a test's IPv4 block `net` (``198.18.7``):
    ``2001:db8:7::`` (append ``/64``, or ``1`` for its first usable address)."""
    return f"2001:db8:{int(net.rsplit('.', 1)[1]):x}::"


@pytest.fixture
def net() -> str:
    """This test's own /24 prefix, e.g. ``198.18.7`` (append ``.0/24`` or ``.10``)."""
    return block()


@contextlib.asynccontextmanager
async def running_manager(
    client: lightkube.AsyncClient, **options: Any
) -> AsyncIterator[controller.Manager]:
    """Run a manager (IPAM and placement; `options` as Manager takes them) for the duration
    of a with-block."""
    manager = controller.Manager(client, **options)
    task = asyncio.create_task(manager.run(), name="test/manager")
    try:
        yield manager
    finally:
        with cancelled_connections_collected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest_asyncio.fixture(loop_scope="session")
async def manager(client: lightkube.AsyncClient) -> AsyncIterator[controller.Manager]:
    async with running_manager(client) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def eips(client: lightkube.AsyncClient) -> AsyncIterator[list[str]]:
    """Names of Eips a test creates; deleted (and awaited) at the end of the test."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ApiError):
            await client.delete(resources.Eip, name)


@pytest_asyncio.fixture(loop_scope="session")
async def nodes(client: lightkube.AsyncClient) -> AsyncIterator[NodeMaker]:
    """Create Nodes (Ready unless told otherwise); all deleted at the end of the test, with
    their placement records.

    Nodes are cluster-scoped and placement considers every Node (and a new leader every
    record), so a test that makes Nodes must leave none behind.
    """
    made: list[str] = []

    async def make(name: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> str:
        await client.create(Node(metadata=ObjectMeta(name=name, labels=labels)))
        made.append(name)
        await set_node_ready(client, name, ready)
        return name

    yield make
    for name in made:
        for kind in (Node, resources.NodePlacement):
            with contextlib.suppress(ApiError):
                await client.delete(kind, name)


NodeMaker = Callable[..., Awaitable[str]]


async def set_node_ready(client: lightkube.AsyncClient, name: str, ready: bool) -> None:
    condition = {"type": "Ready", "status": "True" if ready else "False", "reason": "Test"}
    await client.patch(
        Node.Status, name, {"status": {"conditions": [condition]}}, patch_type=PatchType.MERGE
    )


def eip_object(name: str, address: str, *, protocol: str = "layer2", **spec: Any) -> Any:
    """An Eip object to create."""
    annotations = spec.pop("annotations", None)
    return resources.Eip(
        metadata=ObjectMeta(name=name, annotations=annotations),
        spec={"address": address, "protocol": protocol, **spec},
    )
