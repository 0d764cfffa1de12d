"""The files GraphiQL's page loads: in the package, and each the file its manifest hash names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway.graphiql.assets import (
    OWN_FILES,
    VENDOR,
    AssetMismatch,
    load_assets,
    package_root,
    read_manifest,
    sri,
)

REPOSITORY = Path(__file__).resolve().parents[2]


def test_every_file_of_the_manifest_loads_and_matches_its_hash() -> None:
    manifest = read_manifest()
    paths = [asset.path for asset in load_assets()]

    vendored = [file.path for package in manifest.packages for file in package.files]
    assert paths[: len(vendored)] == vendored
    assert [path.rpartition("/")[2] for path in paths[len(vendored) :]] == list(OWN_FILES)
    assert {package.name for package in manifest.packages} == {
        "react",
        "react-dom",
        "graphiql",
        "@graphiql/plugin-explorer",
    }


def test_the_vendor_folder_holds_the_manifest_s_files_and_their_licenses_only() -> None:
    vendor = Path(str(package_root() / VENDOR))
    on_disk = sorted(
        path.relative_to(vendor).as_posix() for path in vendor.rglob("*") if path.is_file()
    )
    listed = [file.path for package in read_manifest().packages for file in package.files]
    assert sorted(path for path in on_disk if not path.endswith("/LICENSE")) == sorted(listed)


def test_a_changed_file_is_refused_at_load(tmp_path: Path) -> None:
    root = tmp_path / "graphiql"
    shutil.copytree(str(package_root()), root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    file = read_manifest(root).packages[0].files[0]
    target = root / VENDOR / file.path
    target.write_bytes(target.read_bytes() + b"\n")

    with pytest.raises(AssetMismatch) as refused:
        load_assets(root)
    assert str(refused.value) == (
        f"Expected GraphiQL's {file.path} to hash to {file.integrity}, received "
        f"{sri(target.read_bytes())}: run scripts/refresh-graphiql to restore the files the "
        "manifest pins."
    )


def test_the_sri_value_is_sha384_in_base64() -> None:
    # The value `openssl dgst -sha384 -binary | openssl base64 -A` gives for "abc".
    assert sri(b"abc") == (
        "sha384-ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn"
    )


@pytest.mark.slow
def test_the_wheel_ships_every_file_and_each_matches(tmp_path: Path) -> None:
    # Built from a copy of the sources, so that the build leaves nothing in the repository.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, source / name)
    shutil.copytree(
        REPOSITORY / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
    build += ["--no-build-isolation", "--wheel-dir", str(tmp_path / "wheel"), str(source)]
    subprocess.run(build, check=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")

    with zipfile.ZipFile(wheel) as archive:
        root = zipfile.Path(archive, "gateway/graphiql/")
        assets = load_assets(root)  # reads each file from the wheel and checks its hash
        names = set(archive.namelist())
    assert {f"gateway/graphiql/vendor/{a.path}" for a in assets[: -len(OWN_FILES)]} <= names
    assert {f"gateway/graphiql/{name}" for name in OWN_FILES} <= names
