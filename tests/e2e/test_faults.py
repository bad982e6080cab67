"""``porterlb lab fault`` from the command line, and the sampler the fault benchmarks judge by.
Needs root.

What each fault kind does to a lab is ``test_real_faults``: on the real-node lab, one kind at a
time, judged by the router, the rules' counters and the pods. What stays here needs no lab of
its own: the CLI's round trip (apply, refuse a second apply, heal, refuse a second heal), and
the sampler hearing the announcing node alone and nobody for a free IP. Both only read the
session's real-node lab (``speaker_lab``) or apply a fault they heal at once (``ping-loss``,
which restarts nothing), so they share it instead of paying for a lab.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Final

import pytest

from porterlb.lab import sampler
from tests.e2e import faultprobes as probes
from tests.e2e import reallab
from tests.waiting import eventually

pytestmark = reallab.CHART_MARKS

SAMPLES: Final = 25
"""Samples per IP the sampler test waits for: half a second at 20 ms."""

OFFSETS: Final = {"announced": 30, "free": 31}
"""Pool IPs no other module of the session lab asks for."""


def test_the_cli_applies_heals_and_refuses_a_fault_not_applied(speaker_lab):
    name = speaker_lab.plan.name
    node = speaker_lab.plan.nodes[0]
    command = [sys.executable, "-m", "porterlb.cli", "lab", "fault", "--name", name]
    command += ["--node", node.name, "--kind", "ping-loss"]

    def porterlb(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=60, check=False
        )

    applied = porterlb()
    try:
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == f"lab {name}: ping-loss on node {node.name} applied"
        assert probes.leftover(speaker_lab.plan) == {node.netns: ["porterlb_fault_ping_loss"]}
        again = porterlb()
        assert again.returncode == 1
        assert "applied already" in again.stderr
    finally:
        healed = porterlb("--heal")
    assert healed.returncode == 0, healed.stderr
    assert probes.leftover(speaker_lab.plan) == {}
    twice = porterlb("--heal")
    assert twice.returncode == 1
    assert "not applied" in twice.stderr


@pytest.mark.parametrize("family", ["ipv4", "ipv6"], ids=["arp", "ndp"])
async def test_the_sampler_hears_the_announcer_alone_and_nobody_for_a_free_ip(speaker_lab, family):
    name = f"sampled-{family}"
    wanted = speaker_lab.pool_ip(family, OFFSETS["announced"])
    async with speaker_lab.service(name, family, wanted) as ip:
        node = await speaker_lab.announcer(name)
        await speaker_lab.announced(node, ip)
        free = str(speaker_lab.pool_ip(family, OFFSETS["free"]))
        with sampler.Sampler(speaker_lab.plan, [str(ip), free]) as sampled:

            async def enough() -> bool:
                return len(sampled.samples) >= 2 * SAMPLES

            await eventually(enough, what=f"{SAMPLES} samples of {ip} and {free}")
        found = sampler.by_ip(sampled.samples)
    heard = {s.macs for s in found[str(ip)]}
    alone = frozenset({str(node.mac)})
    # A probe a starved speaker answers after the sampler's window counts as unanswered (a
    # silence the benches show); no other MAC may ever answer.
    assert alone in heard
    assert heard <= {alone, frozenset()}
    assert {s.macs for s in found[free]} == {frozenset()}
    assert sampler.overlap(found[str(ip)]).two_answer == 0.0
