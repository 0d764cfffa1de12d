"""scripts/refresh-graphiql against a fake npm registry (httpx.MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from gateway.graphiql.assets import VENDOR, Manifest, VendorFile, VendorPackage, read_manifest, sri
from gateway.graphiql.refresh import RefreshFailed, refresh

REGISTRY = "https://registry.example/"


def tarball(files: Mapping[str, bytes]) -> bytes:
    """An npm tarball: the files under `package/`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """Packages by name and version, with dist-tags; records the URLs it was asked for."""

    def __init__(self) -> None:
        self.tarballs: dict[tuple[str, str], bytes] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.integrity: dict[tuple[str, str], str] = {}
        self.asked: list[str] = []

    def publish(self, name: str, version: str, files: Mapping[str, bytes]) -> None:
        data = tarball(files)
        self.tarballs[name, version] = data
        self.integrity[name, version] = integrity(data)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        self.asked.append(path)
        if path.startswith("/tarballs/"):
            name, _, version = path.removeprefix("/tarballs/").rpartition("/")
            return httpx.Response(200, content=self.tarballs[name.replace("%2F", "/"), version])
        encoded, _, version = path[1:].rpartition("/")
        name = encoded.replace("%2F", "/")
        version = self.tags.get((name, version), version)
        if (name, version) not in self.tarballs:
            return httpx.Response(404, json={"error": "version not found"})
        dist = {
            "tarball": f"{REGISTRY}tarballs/{encoded}/{version}",
            "integrity": self.integrity[name, version],
        }
        return httpx.Response(200, json={"name": name, "version": version, "dist": dist})


def pinned(root: Path, *packages: tuple[str, str, tuple[str, ...]]) -> None:
    """A package folder whose manifest pins `packages` (name, version, sources), unfetched."""
    manifest = Manifest(
        tuple(
            VendorPackage(name, version, "", tuple(VendorFile(s, "", "") for s in sources))
            for name, version, sources in packages
        )
    )
    root.mkdir(exist_ok=True)
    (root / "assets.json").write_text(manifest.to_json())


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.publish("react", "18.3.1", {"umd/react.js": b"react 18", "LICENSE": b"MIT (react)"})
    registry.publish("react", "18.4.0", {"umd/react.js": b"react 18.4", "LICENSE": b"MIT"})
    registry.publish("@graphiql/plugin-explorer", "3.2.6", {"dist/index.umd.js": b"explorer"})
    registry.publish("react", "19.0.0", {"cjs/react.js": b"no UMD any more"})
    registry.tags["react", "latest"] = "19.0.0"
    return registry


def test_pinned_versions_are_fetched_checked_and_hashed(tmp_path: Path, registry: Registry) -> None:
    pinned(
        tmp_path,
        ("react", "18.3.1", ("umd/react.js",)),
        ("@graphiql/plugin-explorer", "3.2.6", ("dist/index.umd.js",)),
    )
    with registry.client() as client:
        manifest = refresh(client, tmp_path, registry=REGISTRY)

    assert manifest == read_manifest(tmp_path)
    assert manifest == Manifest(
        (
            VendorPackage(
                "react",
                "18.3.1",
                registry.integrity["react", "18.3.1"],
                (VendorFile("umd/react.js", "react-18.3.1/react.js", sri(b"react 18")),),
            ),
            VendorPackage(
                "@graphiql/plugin-explorer",
                "3.2.6",
                registry.integrity["@graphiql/plugin-explorer", "3.2.6"],
                (
                    VendorFile(
                        "dist/index.umd.js", "plugin-explorer-3.2.6/index.umd.js", sri(b"explorer")
                    ),
                ),
            ),
        )
    )
    vendor = tmp_path / VENDOR
    assert sorted(p.relative_to(vendor).as_posix() for p in vendor.rglob("*") if p.is_file()) == [
        "plugin-explorer-3.2.6/index.umd.js",
        "react-18.3.1/LICENSE",
        "react-18.3.1/react.js",
    ]
    assert (vendor / "react-18.3.1/LICENSE").read_bytes() == b"MIT (react)"
    assert registry.asked[:2] == ["/react/18.3.1", "/tarballs/react/18.3.1"]
    assert "/@graphiql%2Fplugin-explorer/3.2.6" in registry.asked


def test_a_named_version_replaces_the_pin_and_its_old_files(
    tmp_path: Path, registry: Registry
) -> None:
    pinned(tmp_path, ("react", "18.3.1", ("umd/react.js",)))
    with registry.client() as client:
        refresh(client, tmp_path, registry=REGISTRY)
        manifest = refresh(client, tmp_path, {"react": "18.4.0"}, registry=REGISTRY)

    (package,) = manifest.packages
    assert (package.version, package.files[0].path) == ("18.4.0", "react-18.4.0/react.js")
    assert sorted(p.name for p in (tmp_path / VENDOR).iterdir()) == ["react-18.4.0"]


def failed_refresh(
    root: Path, registry: Registry, versions: Mapping[str, str] | None = None
) -> str:
    """Refreshes `root`, which must fail and leave its manifest and files as they were."""
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with registry.client() as client, pytest.raises(RefreshFailed) as failed:
        refresh(client, root, versions, registry=REGISTRY)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    return str(failed.value)


def test_a_tarball_that_does_not_match_the_registry_s_hash_is_refused(
    tmp_path: Path, registry: Registry
) -> None:
    pinned(tmp_path, ("react", "18.3.1", ("umd/react.js",)))
    with registry.client() as client:
        refresh(client, tmp_path, registry=REGISTRY)
    registry.tarballs["react", "18.3.1"] = tarball({"umd/react.js": b"tampered"})

    message = failed_refresh(tmp_path, registry)
    assert message == (
        f"Expected the tarball of react@18.3.1 to match {registry.integrity['react', '18.3.1']},"
        " received other bytes: refusing it."
    )


def test_a_version_without_a_listed_file_is_refused(tmp_path: Path, registry: Registry) -> None:
    pinned(tmp_path, ("react", "18.3.1", ("umd/react.js",)))

    message = failed_refresh(tmp_path, registry, {"react": "latest"})
    assert message == (
        "Expected umd/react.js in react@19.0.0, received a package without it (a major version "
        "that dropped its UMD build?)."
    )


def test_an_unknown_version_or_package_is_refused(tmp_path: Path, registry: Registry) -> None:
    pinned(tmp_path, ("react", "18.3.1", ("umd/react.js",)))

    assert failed_refresh(tmp_path, registry, {"react": "0.0.0"}) == (
        f"Expected HTTP 200 from {REGISTRY}react/0.0.0, received 404."
    )
    assert failed_refresh(tmp_path, registry, {"left-pad": "1.3.0"}) == (
        "Expected packages of the manifest (react), received left-pad."
    )


def test_metadata_that_is_not_the_registry_s_is_refused(tmp_path: Path) -> None:
    pinned(tmp_path, ("react", "18.3.1", ("umd/react.js",)))
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>"))

    with httpx.Client(transport=transport) as client, pytest.raises(RefreshFailed) as failed:
        refresh(client, tmp_path, registry=REGISTRY)
    assert str(failed.value) == (
        "Expected the registry's metadata of react@18.3.1 (a JSON object with version, "
        "dist.tarball and dist.integrity), received '<html>'."
    )
    assert json.loads((tmp_path / "assets.json").read_text())["packages"][0]["integrity"] == ""
