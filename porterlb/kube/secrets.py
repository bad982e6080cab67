"""The heartbeat key: 32 random bytes in a Secret that every manager and speaker reads.

A manager creates the Secret when it is missing (two replicas racing both end up reading the
winner's key: the loser's create answers 409 and it reads again); a speaker waits for it.
Both then follow the Secret (:func:`follow`: a watch of that one object, by name, so RBAC can
grant it by ``resourceNames``): a new key is taken up while running, in the two steps of
:mod:`porterlb.liveness.keys`, and no pod restarts, unlike MetalLB's memberlist Secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from porterlb import errors
from porterlb.kube import metrics, reflector
from porterlb.liveness import wire

log = logging.getLogger(__name__)

DEFAULT_NAME: Final = "porterlb-heartbeat"
FIELD: Final = "key"
KEY_LEN: Final = 32
"""RFC 2104 §3: a key as long as the SHA-256 output."""

RETRY_DELAYS: Final = (0.2, 0.5, 1.0, 2.0)
"""Seconds between reads while the Secret is missing or the API is away; the last repeats."""


async def heartbeat_key(
    client: lightkube.AsyncClient, *, namespace: str, name: str, create: bool
) -> bytes:
    """The key in Secret ``namespace/name``; with ``create``, made first if missing.

    Waits (retrying) while the Secret is missing and ``create`` is false, or the API server is
    unreachable. Raises InvalidSpec when the Secret exists but holds no usable key.
    """
    failures = 0
    while True:
        try:
            return await _read_or_create(client, namespace, name, create=create)
        except (ApiError, httpx2.TransportError, OSError) as error:
            if failures == 0:
                log.warning("heartbeat key Secret %s/%s: %s; waiting", namespace, name, error)
            await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
            failures += 1


async def _read_or_create(
    client: lightkube.AsyncClient, namespace: str, name: str, *, create: bool
) -> bytes:
    try:
        metrics.API_REQUESTS.labels("get", "secrets").inc()
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as error:
        if error.status.code != 404 or not create:
            raise
        metrics.API_REQUESTS.labels("create", "secrets").inc()
        fresh = Secret(
            metadata=ObjectMeta(name=name, namespace=namespace),
            data={FIELD: base64.b64encode(os.urandom(KEY_LEN)).decode()},
        )
        try:
            secret = await client.create(fresh)
        except ApiError as race:
            if race.status.code != 409:
                raise
            secret = await client.get(Secret, name, namespace=namespace)
        else:
            log.info("created heartbeat key Secret %s/%s", namespace, name)
    return _key(namespace, name, secret.data or {})


async def follow(
    client: lightkube.AsyncClient, *, namespace: str, name: str, on_key: Callable[[bytes], None]
) -> None:
    """Call `on_key` with the key of Secret ``namespace/name`` whenever it is listed or
    changes, until cancelled. A Secret deleted, or changed to hold no usable key, is logged
    and changes nothing: the key in use stays."""
    last: list[bytes] = []

    def changed(_: str) -> None:
        obj = secrets.cache.get(f"{namespace}/{name}")
        if obj is None:
            log.warning(
                "heartbeat key Secret %s/%s is gone: keeping the key in use", namespace, name
            )
            return
        try:
            key = _key(namespace, name, obj.get("data") or {})
        except errors.InvalidSpec as error:
            log.warning("%s; keeping the key in use", error)
            return
        if last and key != last[0]:
            log.info("heartbeat key Secret %s/%s: a new key; rotating to it", namespace, name)
        last[:] = [key]
        on_key(key)

    secrets = reflector.Reflector(
        client,
        Secret,
        on_change=changed,
        name="secrets",
        namespace=namespace,
        field_selector=f"metadata.name={name}",
    )
    await secrets.run()


def _key(namespace: str, name: str, data: Mapping[str, Any]) -> bytes:
    """The key in a Secret's ``data``. Raises InvalidSpec when it holds no usable key."""
    encoded = data.get(FIELD)
    try:
        key = base64.b64decode(str(encoded), validate=True) if encoded else b""
    except ValueError:
        raise errors.InvalidSpec(f"Secret {namespace}/{name}: data.{FIELD} is not base64") from None
    if len(key) < wire.MIN_KEY_LEN:
        raise errors.InvalidSpec(
            f"Secret {namespace}/{name}: data.{FIELD} must hold at least"
            f" {wire.MIN_KEY_LEN} bytes, has {len(key)}"
        )
    return key
