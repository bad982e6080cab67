"""The marks every end-to-end module carries: what the machine must offer for it to run."""

from __future__ import annotations

import os
import shutil

import pytest

from porterlb.lab import binaries


def e2e(*tools: str, control_plane: bool = False) -> list[pytest.MarkDecorator]:
    """Marks for an e2e module needing root, the programs `tools`, and maybe the control plane.

    CI runs as root with every tool installed and the control plane built (``.ci/run``), so
    there these never skip; they only explain a run on an unprepared machine.
    """
    marks = [
        pytest.mark.e2e,
        pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
        pytest.mark.skipif(
            any(shutil.which(tool) is None for tool in tools),
            reason=f"needs the programs {', '.join(tools)}",
        ),
    ]
    if control_plane:
        marks.append(
            pytest.mark.skipif(
                not (binaries.bin_dir() / "kube-apiserver").is_file(),
                reason="run `porterlb lab build-control-plane` first",
            )
        )
    return marks
