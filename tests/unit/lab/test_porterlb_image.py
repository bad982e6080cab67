"""The cache key of the lab's porterlb image: what rebuilds it and what does not."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import netns
from porterlb.lab.node import porterlb_image

FILES = st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=40), min_size=1)


@given(FILES)
def test_the_key_ignores_the_order_files_are_listed_in(files):
    assert porterlb_image.key(dict(reversed(list(files.items())))) == porterlb_image.key(files)


@given(FILES, st.binary(min_size=1, max_size=8))
def test_any_changed_byte_changes_the_key(files, extra):
    name = sorted(files)[0]
    changed = {**files, name: files[name] + extra}
    assert porterlb_image.key(changed) != porterlb_image.key(files)


def test_moving_bytes_between_files_changes_the_key():
    assert porterlb_image.key({"a": b"xy", "b": b""}) != porterlb_image.key({"a": b"x", "b": b"y"})


def tree(root: Path) -> Path:
    for name in porterlb_image.INPUTS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / "pyproject.toml").write_text('[project]\nname = "porterlb"\nversion = "1.2.3"\n')
    for name in ("porterlb/cli.py", "porterlb/lab/lab.py", "porterlb/__pycache__/cli.pyc"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def test_the_sources_are_what_the_build_context_holds(tmp_path):
    found = porterlb_image.sources(tree(tmp_path))
    assert set(found) == {*porterlb_image.INPUTS, "porterlb/cli.py"}


def test_a_lab_change_keeps_the_image_and_a_package_change_makes_a_new_one(tmp_path):
    root = tree(tmp_path)
    first = porterlb_image.planned(root, tmp_path / "cache")
    (root / "porterlb/lab/lab.py").write_text("changed")
    assert porterlb_image.planned(root, tmp_path / "cache") == first
    (root / "porterlb/cli.py").write_text("changed")
    second = porterlb_image.planned(root, tmp_path / "cache")
    assert second.tag != first.tag
    assert second.tag.startswith("1.2.3-")
    assert second.archive == tmp_path / "cache" / "images" / f"porterlb-{second.tag}.oci.tar"
    assert second.name == f"localhost/porterlb:{second.tag}"


def test_a_cached_archive_is_used_without_a_build(tmp_path):
    root = tree(tmp_path)
    image = porterlb_image.planned(root, tmp_path / "cache")
    image.archive.parent.mkdir(parents=True)
    image.archive.write_bytes(b"archive")
    # The build script under root is no script: a build would fail.
    assert porterlb_image.ensure(root, tmp_path / "cache") == (image, False)


def test_imports_run_at_once_and_a_failed_one_is_reported_with_its_output():
    ok = porterlb_image.Imports.start([["true"], ["true"]])
    assert ok.wait() >= 0
    failing = porterlb_image.Imports.start([["true"], ["sh", "-c", "echo no space left; exit 3"]])
    with pytest.raises(netns.LabError, match="sh -c echo no space left; exit 3: no space left"):
        failing.wait()
