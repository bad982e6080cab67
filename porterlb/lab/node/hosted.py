"""porterlb on a real-node lab as host processes, until the chart installs it there.

The same managers and speakers the default lab runs (:func:`porterlb.lab.lab.start_porterlb`:
managers in the host's namespace pinging from the router's, one speaker in each worker's
namespace), with the same credentials, CRDs and Eips. What differs is only what is already
there: the kubelets registered the Nodes, and the Services' backends are pods
(:mod:`porterlb.lab.node.workloads`). The speakers are not in the lab's mount namespace: they
change no kernel tunable and mount nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from porterlb.kube import client as kube_client
from porterlb.lab import cluster, crds, lab, plan


def start(record: lab.Record) -> lab.Record:
    """Install porterlb's access, CRDs and Eips, start its managers and speakers and wait
    for them (warning about those that do not get ready, as ``lab up`` does); return the
    record with them added (also written to ``lab.json``).

    Raises InvalidSpec if the API refuses an object, LabError if a process cannot start.
    """
    asyncio.run(lab.grant(record.kubeconfig, record.directory))
    asyncio.run(_install(record.plan, record.kubeconfig))
    roles = lab.start_porterlb(record.plan, record.directory)
    lab.await_porterlb(record.plan, roles)
    updated = dataclasses.replace(
        record,
        processes=(*record.processes, *roles),
        metrics={**record.metrics, **{process.role: address for process, address in roles.items()}},
    )
    lab.save(updated)
    return updated


async def _install(layout: plan.Lab, kubeconfig: Path) -> None:
    async with kube_client.connect(kubeconfig) as client:
        await crds.install(client)
        await cluster.create_eips(client, layout)
