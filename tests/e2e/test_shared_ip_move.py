"""A shared IP being moved: one entry of one record, so no node answers for it in between,
never two.

The manager moves an IP that several Services share by taking its entry (both Services in
it) out of the old node's placement record, waiting for the old node's echo, and writing the
entry into the new node's record. Here the test writes those records itself, with the
managers stopped so that nothing else writes, and the router's LAN leg asks who answers at
each step: the old node until its record lacks the IP, nobody in between, the new node once
its record holds it. On the session's real-node lab (``conftest.py``): the managers are
stopped (``lab fault --kind managers-down``: killed, their Deployment scaled to 0) and started
again after. Needs root.
"""

from __future__ import annotations

from lightkube.core.exceptions import ApiError

from porterlb.api import wellknown
from porterlb.kube import reflector, resources, writers
from porterlb.placement import records
from tests.e2e import marks, reallab
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]

OFFSET = 20
"""The module's own pool IP in the session's lab."""


async def test_a_shared_ip_is_answered_by_no_node_between_its_records(speaker_lab):
    sharing = {wellknown.SHARING_KEY: "web"}
    ip = speaker_lab.pool_ip("ipv4", OFFSET)
    async with (
        speaker_lab.service("shared-a", "ipv4", ip, annotations=sharing),
        speaker_lab.service("shared-b", "ipv4", ip, annotations=sharing, port=8080),
    ):
        old = await speaker_lab.announcer("shared-a")
        assert await speaker_lab.announcer("shared-b") == old
        new = next(node for node in speaker_lab.plan.nodes if node != old)

        async def answered_by(*nodes):
            return await speaker_lab.answers(ip) == {str(node.mac) for node in nodes}

        await eventually(lambda: answered_by(old), what=f"{old.name} to answer for {ip}")
        async with speaker_lab.fault("managers-down"):
            entry = await write(speaker_lab, old.name, ip, None)
            assert entry is not None and len(entry.services) == 2  # both Services, one entry
            await eventually(answered_by, what=f"no node to answer for {ip}")
            await write(speaker_lab, new.name, ip, entry)
            await eventually(lambda: answered_by(new), what=f"{new.name} to answer for {ip}")


async def write(speaker_lab, node, ip, entry):
    """Write `node`'s record with `ip` as `entry` (None: without `ip`); its entry before."""
    try:
        obj = (await speaker_lab.api.get(resources.NodePlacement, node)).to_dict()
    except ApiError as error:
        if error.status.code != 404:
            raise
        obj = {}
    found = records.parse(obj)
    before = found.pop(str(ip), None)
    if entry is not None:
        found[str(ip)] = entry
    await writers.write_node_placement(
        speaker_lab.api, node, records.spec(found), resource_version=reflector.version(obj) or None
    )
    return before
