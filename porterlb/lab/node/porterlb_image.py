"""porterlb's own image for the real-node lab: the repository's Dockerfile, built once per
source state by ``scripts/build-image.sh``, then imported into each node's containerd.

**What is built is what ships.** The lab runs the script users and CI run (buildah, the
Dockerfile unchanged, the base stand-in of :mod:`scripts/build-image.sh` where no registry is
reachable); it only names the image ``localhost/porterlb:VERSION-KEY``, where KEY is a hash
of every file the build reads: the Dockerfile, ``.dockerignore``, the project files it
copies, the package without ``porterlb/lab`` (which ``.dockerignore`` keeps out of the
context) and the script itself. A warm ``lab up`` finds the archive
``$PORTERLB_CACHE/images/porterlb-VERSION-KEY.oci.tar`` and builds nothing; a changed module
builds once (buildah reuses its cached dependency layer). Archives and images of older keys
are removed after a build, so the cache holds one per version.

**Why a name with no registry.** ``localhost/`` is a registry no node can pull from, so the
chart's ``image.pullPolicy=Never`` is the only way the pods start, and a name collision with a
real image is impossible.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from porterlb.lab import binaries, netns

ROOT: Final = Path(__file__).parents[3]

SCRIPT: Final = Path("scripts") / "build-image.sh"

INPUTS: Final = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "uv.lock",
    "README.md",
    str(SCRIPT),
)
"""The files besides the package that decide what the build makes."""

PACKAGE: Final = "porterlb"
EXCLUDED: Final = ("porterlb/lab/",)
"""Under the package but out of the build context (``.dockerignore``): changing the lab
rebuilds nothing."""

REPOSITORY: Final = "localhost/porterlb"
"""What ``scripts/build-image.sh`` names the image (``IMAGE=localhost/porterlb:TAG``)."""

BUILD_TOOLS: Final = ("buildah", "debootstrap")
"""Debian packages the build needs (``scripts/dev.sh`` installs them with the node's)."""

Report = Callable[[str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Image:
    """The lab's porterlb image: its name and the OCI archive that holds it."""

    repository: str
    tag: str
    archive: Path

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}"


def sources(root: Path = ROOT) -> dict[str, bytes]:
    """Path (relative to ``root``) -> content of every file the image is built from."""
    found = {name: (root / name).read_bytes() for name in INPUTS}
    for path in sorted((root / PACKAGE).rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (
            path.is_file()
            and "__pycache__" not in path.parts
            and path.suffix != ".pyc"
            and not relative.startswith(EXCLUDED)
        ):
            found[relative] = path.read_bytes()
    return found


def key(files: Mapping[str, bytes]) -> str:
    """A short hash of ``files`` (path -> content) that changes when any path or byte does."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:12]


def planned(root: Path = ROOT, cache: Path | None = None) -> Image:
    """The image the sources under ``root`` make, and where its archive is cached."""
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    tag = f"{version}-{key(sources(root))}"
    images = (cache or binaries.cache_dir()) / "images"
    return Image(REPOSITORY, tag, images / f"porterlb-{tag}.oci.tar")


def ensure(
    root: Path = ROOT, cache: Path | None = None, *, report: Report = lambda line: None
) -> tuple[Image, bool]:
    """The lab's image, built first unless its archive is cached; and whether it was built.

    Raises LabError naming the build's log when ``scripts/build-image.sh`` fails.
    """
    image = planned(root, cache)
    if image.archive.is_file():
        return image, False
    image.archive.parent.mkdir(parents=True, exist_ok=True)
    # Labs brought up at once (a bench beside an e2e module) would build the same archive
    # twice, each removing the other's log; the second waits and finds the first's archive.
    with (image.archive.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.archive.is_file():
            return image, False
        _build(root, image, report)
        return image, True


def _build(root: Path, image: Image, report: Report) -> None:
    log = image.archive.with_suffix(".log")
    report(f"building {image.name} from the Dockerfile (minutes the first time); log {log}")
    env = {
        **os.environ,
        "PORTERLB_IMAGE_TAG": image.tag,
        "PORTERLB_CACHE": str(image.archive.parents[1]),
    }
    with log.open("w") as output:
        done = subprocess.run(
            [str(root / SCRIPT)], cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    if done.returncode != 0 or not image.archive.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise netns.LabError(f"building {image.name} failed (see {log}):\n{tail}")
    _prune(image)
    log.unlink()


def _prune(image: Image) -> None:
    """Remove the archives of this version's older keys, and those images from buildah's
    storage (their layers shared with ``image`` stay)."""
    version = image.tag.rpartition("-")[0]
    for stale in image.archive.parent.glob(f"porterlb-{version}-*.oci.tar"):
        if stale != image.archive:
            stale.unlink()
            tag = stale.name.removeprefix("porterlb-").removesuffix(".oci.tar")
            subprocess.run(
                ["buildah", "rmi", f"{image.repository}:{tag}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # gone already is fine: the archive is what the lab uses


@dataclasses.dataclass(frozen=True, slots=True)
class Imports:
    """``ctr images import`` running into several nodes' containerd at once: unpacking the
    image takes ~10-25 s per node on 2 loaded cores, time the lab spends starting the
    kubelets meanwhile. A ``ctr`` whose containerd is stopped (a failed ``lab up``) exits."""

    running: tuple[tuple[str, subprocess.Popen[str]], ...]
    """Each command, as one line, and its process."""
    started: float
    """``time.monotonic()`` when they started."""

    @classmethod
    def start(cls, argvs: Sequence[Sequence[str]]) -> Imports:
        return cls(
            tuple(
                (
                    " ".join(argv),
                    subprocess.Popen(
                        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    ),
                )
                for argv in argvs
            ),
            time.monotonic(),
        )

    def wait(self) -> float:
        """Return the seconds from their start until every import was done. Raises LabError
        with the output of those that failed."""
        failed = []
        for command, process in self.running:
            output, _ = process.communicate()
            if process.returncode != 0:
                failed.append(f"{command}: {output.strip()}")
        if failed:
            raise netns.LabError("importing porterlb's image failed: " + "; ".join(failed))
        return time.monotonic() - self.started
