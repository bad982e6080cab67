"""Hundreds of random Service changes with leader kills between: every invariant holds.

The CI-sized run of :mod:`bench.churn` (which has the full-size one and explains the
invariants): two ``porterlb manager`` processes against the session's API server, the leader
SIGKILLed and replaced after some of the phases, and the API read after every phase until it
has converged with no invariant broken.
"""

from __future__ import annotations

import pytest

from bench import churn

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_random_changes_with_leader_kills_break_no_invariant(
    client, control_plane, namespace, net, tmp_path
):
    settings = churn.Settings(ops=600, seed=9, phases=6, kills=3, converge_within=90.0)
    pools = churn.pools_in(f"{net}.1", namespace, (6, 30, 60))
    result = await churn.run(
        client,
        control_plane.kubeconfig,
        settings,
        namespace=namespace,
        pools=pools,
        logs=tmp_path,
    )
    assert len(result.phases) == settings.phases
    assert sum(phase.killed is not None for phase in result.phases) == settings.kills
    assert set(result.counts) == {"create", "update", "delete", "class", "pool"}
