"""The heartbeat key: 32 random bytes in a Secret that every manager and speaker reads.

A manager creates the Secret when it is missing (two replicas racing both end up reading the
winner's key: the loser's create answers 409 and it reads again); a speaker waits for it. The
key is read once at start: rotating it means restarting the pods, as with MetalLB's
memberlist Secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Final

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from porterlb import errors
from porterlb.kube import metrics
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
    encoded = (secret.data or {}).get(FIELD)
    key = base64.b64decode(encoded) if encoded else b""
    if len(key) < wire.MIN_KEY_LEN:
        raise errors.InvalidSpec(
            f"Secret {namespace}/{name}: data.{FIELD} must hold at least"
            f" {wire.MIN_KEY_LEN} bytes, has {len(key)}"
        )
    return key
