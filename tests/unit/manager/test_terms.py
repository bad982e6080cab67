"""A manager that wins the Lease again does not repeat the Events it posted in an earlier term,
nor write every Eip status at once."""

from __future__ import annotations

import asyncio

import lightkube
from lightkube import KubeConfig

from porterlb.api import eip, reasons
from porterlb.api import service as svc
from porterlb.api.keys import PoolName
from porterlb.kube import queueing
from porterlb.manager import ipam, pool_status, service_plan

UNUSED = KubeConfig.from_dict(
    {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "never-sent"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
)

WEB = svc.parse({"metadata": {"namespace": "shop", "name": "web", "uid": "u-1"}})


def posted(manager: ipam.Ipam) -> list[str]:
    found = []
    while not manager.poster.queue.empty():
        found.append(manager.poster.queue.get_nowait().message)
    return found


async def test_the_same_news_is_not_said_again_in_a_new_term_and_new_news_is():
    manager = ipam.Ipam(lightkube.AsyncClient(config=UNUSED), lb_class="porterlb.io/layer2")
    allocated = service_plan.Report(False, reasons.IP_ALLOCATED, "Service shop/web: 198.18.0.1")
    manager._report(WEB, allocated)
    manager._reset()  # the Lease was lost and won again
    manager._report(WEB, allocated)
    moved = service_plan.Report(False, reasons.IP_ALLOCATED, "Service shop/web: 198.18.0.2")
    manager._report(WEB, moved)
    assert posted(manager) == [allocated.message, moved.message]


async def test_a_pool_problem_is_not_said_again_in_a_new_term():
    manager = ipam.Ipam(lightkube.AsyncClient(config=UNUSED), lb_class="porterlb.io/layer2")
    manager.problems = {PoolName("lan"): (reasons.POOL_OVERLAP, 'Eip "lan" overlaps "wan"')}
    manager._report_problem(PoolName("lan"), "u-2")
    manager._reset()
    manager.problems = {PoolName("lan"): (reasons.POOL_OVERLAP, 'Eip "lan" overlaps "wan"')}
    manager._report_problem(PoolName("lan"), "u-2")
    assert posted(manager) == ['Eip "lan" overlaps "wan"']


async def test_the_pace_of_eip_status_writes_outlives_a_term():
    """A term that starts right after a write of a 1,000-entry status waits its turn like any
    later decision of the same term would: no burst of whole-status writes per term."""
    manager = ipam.Ipam(lightkube.AsyncClient(config=UNUSED), lb_class="porterlb.io/layer2")
    lan = eip.parse(
        {"metadata": {"name": "lan"}, "spec": {"address": "198.18.0.0/22", "protocol": "layer2"}}
    )
    now = asyncio.get_running_loop().time()
    manager._eip_written[lan.name] = pool_status.Written(at=now, entries=1000, own=1000, counted=0)
    manager._pool_changed[lan.name] = now
    manager._reset()  # the Lease was lost and won again
    outcome = await manager._write_eip_status(lan, {"metadata": {"name": "lan"}})
    assert isinstance(outcome, queueing.Retry)
    assert outcome.after > 0
