"""The docs match the code: every metric, Event reason and flag is in docs/reference.md, every
metric name follows Prometheus' conventions, and no README or docs link leaves the repo."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from porterlb import cli
from porterlb.api import reasons

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
ROLES = ("porterlb.cli", "porterlb.manager.controller", "porterlb.speaker.agent")
"""What the manager and the speaker import: between them, every metric they register."""

UNIT_WORDS = re.compile(r"_(ms|millis|milliseconds|minutes|hours|us|ns|kb|mb|percent)(_|$)")


def exposed() -> dict[str, str]:
    """Every porterlb metric the roles register: its exposed name -> its type."""
    for module in ROLES:
        importlib.import_module(module)
    found = {}
    for family in REGISTRY.collect():
        if family.name.startswith("porterlb_"):
            name = f"{family.name}_total" if family.type == "counter" else family.name
            found[name] = family.type
    return found


def test_the_roles_register_the_metrics_users_alert_on():
    names = exposed()
    for name in (
        "porterlb_pool_addresses",
        "porterlb_pool_addresses_in_use",
        "porterlb_pool_services",
        "porterlb_allocation_failures_total",
        "porterlb_manager_leader",
        "porterlb_leader_transitions_total",
        "porterlb_failovers_total",
        "porterlb_failover_duration_seconds",
        "porterlb_api_request_errors_total",
        "porterlb_watch_synced",
        "porterlb_watch_established",
        "porterlb_build_info",
        "porterlb_speaker_announced_ips",
        "porterlb_speaker_fenced",
        "porterlb_speaker_heartbeat_age_seconds",
        "porterlb_l2_conflicts_total",
    ):
        assert name in names


@pytest.mark.parametrize("name", sorted(exposed()))
def test_every_metric_follows_the_naming_conventions(name):
    kind = exposed()[name]
    assert re.fullmatch(r"porterlb_[a-z0-9]+(_[a-z0-9]+)*", name), name
    assert not name.endswith("_total_total"), name
    if kind == "counter":
        assert name.endswith("_total"), name
    else:
        assert not name.endswith(("_total", "_count", "_sum", "_bucket")), name
    if kind == "histogram":
        assert name.endswith(("_seconds", "_bytes")), f"{name}: a histogram names its unit"
    assert not UNIT_WORDS.search(name), f"{name}: base units only (seconds, bytes)"


@pytest.mark.parametrize("name", sorted(exposed()))
def test_every_metric_is_documented(name):
    assert f"`{name}`" in REFERENCE, f"{name} is missing from docs/reference.md"


@pytest.mark.parametrize("reason", sorted(reasons.ALL))
def test_every_event_reason_and_condition_is_documented(reason):
    assert f"`{reason}`" in REFERENCE, f"{reason} is missing from docs/reference.md"


def flags(parser: argparse.ArgumentParser, role: str) -> list[str]:
    sub = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return [
        option
        for action in sub.choices[role]._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


@pytest.mark.parametrize("role", ["manager", "speaker", "status"])
def test_every_flag_is_documented(role):
    section = REFERENCE.split(f"### `porterlb {role}`", 1)[1].split("\n### ", 1)[0]
    for flag in flags(cli._parser([role]), role):
        assert f"`{flag}" in section, f"porterlb {role} {flag} is missing from docs/reference.md"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repo_and_resolve(page):
    for target in LINK.findall(page.read_text()):
        assert "://" not in target and not target.startswith("mailto:"), (
            f"{page.name} links outside the repo: {target}"
        )
        path = target.split("#", 1)[0]
        if not path:
            continue  # an anchor in the same page
        resolved = (page.parent / path).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repo: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"
