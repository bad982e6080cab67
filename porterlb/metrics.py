"""Metrics of the process, whichever role it runs: which porterlb it is.

Each package keeps its own metrics in its ``metrics.py``; this one belongs to no package, so it
sits at the top, imported by ``porterlb.cli`` for every role.
"""

from __future__ import annotations

import importlib.metadata
from typing import Final

import prometheus_client

BUILD_INFO: Final = prometheus_client.Gauge(
    "porterlb_build_info", "Always 1; the running porterlb version as a label.", ["version"]
)
BUILD_INFO.labels(importlib.metadata.version("porterlb")).set(1)
