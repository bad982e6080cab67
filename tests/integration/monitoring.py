"""The Prometheus Operator's PodMonitor and PrometheusRule CRDs, for the chart's optional objects.

The real CRDs (their full schemas), from the Go module ``porterlb lab build-tools`` fetches.
"""

from __future__ import annotations

import lightkube
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from porterlb.lab import binaries, crds

KINDS = {"PodMonitor": "podmonitors", "PrometheusRule": "prometheusrules"}

for _kind, _plural in KINDS.items():
    create_namespaced_resource("monitoring.coreos.com", "v1", _kind, _plural)


async def install(client: lightkube.AsyncClient) -> None:
    """Create the two CRDs (kept if they exist) and wait until both are Established."""
    directory = binaries.prometheus_operator_crds()
    for plural in KINDS.values():
        (crd,) = codecs.load_all_yaml(
            (directory / f"monitoring.coreos.com_{plural}.yaml").read_text()
        )
        try:
            await client.create(crd)
        except ApiError as error:
            if error.status.code != 409:
                raise
        await crds.established(client, f"{plural}.monitoring.coreos.com")
