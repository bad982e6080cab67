"""A manager that wins the Lease again does not repeat the Events it posted in an earlier term."""

from __future__ import annotations

import lightkube
from lightkube import KubeConfig

from porterlb.api import reasons
from porterlb.api import service as svc
from porterlb.api.keys import PoolName
from porterlb.manager import ipam, service_plan

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
