"""Install porterlb's CRDs into a control plane and wait until the API serves them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import lightkube
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from porterlb import errors

DIRECTORY = Path(__file__).parents[2] / "deploy" / "crds"
ESTABLISH_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


async def install(client: lightkube.AsyncClient, directory: Path = DIRECTORY) -> None:
    """Create every CRD under ``directory`` (existing ones are kept) and wait for Established."""
    names: list[str] = []
    documents = [path.read_text() for path in sorted(directory.glob("*.yaml"))]  # noqa: ASYNC240
    for document in documents:
        for crd in codecs.load_all_yaml(document):
            assert crd.metadata is not None and crd.metadata.name, "a CRD file without a name"
            names.append(crd.metadata.name)
            try:
                await client.create(crd)
            except ApiError as error:
                if error.status.code != 409:
                    raise
    for name in names:
        await established(client, name)


async def established(client: lightkube.AsyncClient, name: str) -> None:
    """Return once CRD `name` is Established; PorterlbError after ESTABLISH_TIMEOUT."""
    deadline = time.monotonic() + ESTABLISH_TIMEOUT
    while time.monotonic() < deadline:
        crd = await client.get(CustomResourceDefinition, name)
        conditions = (crd.status.conditions if crd.status else None) or ()
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise errors.PorterlbError(f"CRD {name} not Established within {ESTABLISH_TIMEOUT:.0f} s")
