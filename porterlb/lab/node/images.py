"""The lab's one container image, written as an OCI image archive with the standard library.

No registry is reachable from the lab, and the real pause image would have to come from one.
A static busybox does both jobs: as the pod sandbox it runs ``sleep infinity`` (all a pause
container does is hold the pod's namespaces), and as a workload it has a shell, ``ip`` and
``wget``. The archive (an OCI layout in a tar: ``oci-layout``, ``index.json``, blobs) is what
``ctr images import`` reads; one uncompressed layer keeps it dependency-free and byte-for-byte
reproducible, so the digest only changes when busybox does.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Final

NAME: Final = "porterlb.invalid/lab/busybox:1"
"""Pause and workload image name: a reserved TLD (RFC 2606), so nothing can ever pull it."""

BUSYBOX: Final = Path("/bin/busybox")
"""Debian's ``busybox-static``: statically linked, so the image needs no libc."""

SLEEP: Final = ("/bin/busybox", "sleep", "infinity")
"""The sandbox's command: it holds the pod's namespaces and exits only on a signal."""

MEDIA_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
MEDIA_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
"""Media types of the OCI image spec v1.0 (image-spec/media-types.md)."""


def write(path: Path, *, busybox: Path = BUSYBOX, name: str = NAME) -> Path:
    """Write the image archive of ``name`` to ``path`` and return it.

    Raises FileNotFoundError naming ``busybox`` when it is not installed.
    """
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} is missing: install Debian's busybox-static")
    layer = _layer(busybox.read_bytes())
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(SLEEP), "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config),
            "layers": [_descriptor(MEDIA_LAYER, layer)],
        }
    )
    annotations = {
        # containerd's importer names the image from this annotation (ctr import, 1.6).
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [{**_descriptor(MEDIA_MANIFEST, manifest), "annotations": annotations}],
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(archive, "index.json", _json(index))
        for blob in (layer, config, manifest):
            _add(archive, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
    return path


def _layer(busybox: bytes) -> bytes:
    """A root filesystem of ``/bin/busybox`` and its ``sh`` link, plus an empty ``/tmp``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for directory in ("bin", "tmp"):
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            layer.addfile(entry)
        _add(layer, "bin/busybox", busybox, mode=0o755)
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        layer.addfile(link)
    return out.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode = len(data), mode
    archive.addfile(entry, io.BytesIO(data))


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(blob: bytes) -> str:
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}
