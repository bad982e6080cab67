"""The bench's wait between two faults, against the real API server: a pod that never gets
Ready keeps the lab unsettled, and the error names it; once it is gone the lab settles."""

from __future__ import annotations

import lightkube
import pytest
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from porterlb.lab import controlplane, netns, settle

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_a_pod_not_ready_keeps_the_lab_unsettled_until_it_goes(
    client: lightkube.AsyncClient, control_plane: controlplane.Endpoints, namespace: str
) -> None:
    spec = PodSpec(containers=[Container(name="c", image="never-pulled")], nodeName="nowhere")
    await client.create(Pod(metadata=ObjectMeta(name="waiting", namespace=namespace), spec=spec))
    # No kubelet runs here: the pod is never Ready.
    with pytest.raises(
        netns.LabError, match=rf"lab t: not settled within 3 s .*{namespace}/waiting"
    ):
        await settle.until_settled(
            client, control_plane.kubeconfig, lab_name="t", quiet=0.5, limit=3.0
        )
    await client.delete(Pod, "waiting", namespace=namespace, grace_period=0)
    waited = await settle.until_settled(
        client, control_plane.kubeconfig, lab_name="t", quiet=0.5, limit=120.0
    )
    assert waited >= 0.5
