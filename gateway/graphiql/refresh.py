"""`scripts/refresh-graphiql [name@version ...]`: fetch GraphiQL's npm files and rewrite the pins.

For every package of the manifest, at its pinned version or the one named on the command line (a
version or a dist-tag such as `latest`), it downloads the registry's tarball, refuses it unless it
matches the registry's `dist.integrity`, takes the files the manifest lists (and the package's
license) into `vendor/<name>-<version>/`, and rewrites `assets.json` with each file's sha384.
Nothing is written unless every package was fetched and checked.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import posixpath
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from gateway.graphiql.assets import (
    MANIFEST,
    VENDOR,
    Manifest,
    VendorFile,
    VendorPackage,
    read_manifest,
    sri,
)

DEFAULT_REGISTRY = "https://registry.npmjs.org/"
#: License files copied next to a package's files (the MIT license asks for its notice).
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "license")


class RefreshFailed(Exception):
    """A package could not be fetched or did not check out; nothing was written."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A package at a resolved version: its manifest entry and the bytes of its files."""

    package: VendorPackage
    contents: Mapping[str, bytes]


def refresh(
    client: httpx.Client,
    root: Path,
    versions: Mapping[str, str] | None = None,
    *,
    registry: str = DEFAULT_REGISTRY,
) -> Manifest:
    """Fetch every package of `root`'s manifest (at `versions[name]` when given), then replace
    `root/vendor` and rewrite `root/assets.json`; returns the new manifest.

    Raises `RefreshFailed` (having written nothing) when a version, a tarball, a hash or a file
    is not what it should be.
    """
    versions = dict(versions or {})
    manifest = read_manifest(root)
    unknown = set(versions) - {package.name for package in manifest.packages}
    if unknown:
        raise RefreshFailed(
            f"Expected packages of the manifest ({', '.join(p.name for p in manifest.packages)}),"
            f" received {', '.join(sorted(unknown))}."
        )
    fetched = [
        _fetch(client, registry, package, versions.get(package.name, package.version))
        for package in manifest.packages
    ]
    new = Manifest(tuple(item.package for item in fetched))
    # Build the new folder beside the old one, then swap: an interrupted run leaves the old
    # files and manifest, which still match each other.
    staging = Path(tempfile.mkdtemp(prefix=".vendor-", dir=root))
    try:
        for item in fetched:
            for path, content in item.contents.items():
                target = staging.joinpath(*path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        shutil.rmtree(root / VENDOR, ignore_errors=True)
        staging.rename(root / VENDOR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (root / MANIFEST).write_text(new.to_json(), encoding="utf-8")
    return new


def _fetch(client: httpx.Client, registry: str, pinned: VendorPackage, version: str) -> Fetched:
    metadata = _get(client, f"{registry.rstrip('/')}/{quote(pinned.name, safe='@')}/{version}")
    try:
        document = metadata.json()
        resolved, dist = str(document["version"]), document["dist"]
        tarball_url, integrity = str(dist["tarball"]), str(dist["integrity"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RefreshFailed(
            f"Expected the registry's metadata of {pinned.name}@{version} (a JSON object with "
            f"version, dist.tarball and dist.integrity), received {metadata.text[:200]!r}."
        ) from exc
    tarball = _get(client, tarball_url).content
    if not _matches(tarball, integrity):
        raise RefreshFailed(
            f"Expected the tarball of {pinned.name}@{resolved} to match {integrity}, "
            "received other bytes: refusing it."
        )
    members = _read_tarball(tarball, pinned.name, resolved)
    package = VendorPackage(pinned.name, resolved, integrity, ())
    files, contents = [], {}
    for file in pinned.files:
        content = members.get(file.source)
        if content is None:
            raise RefreshFailed(
                f"Expected {file.source} in {pinned.name}@{resolved}, received a package "
                "without it (a major version that dropped its UMD build?)."
            )
        path = f"{package.folder}/{posixpath.basename(file.source)}"
        files.append(VendorFile(file.source, path, sri(content)))
        contents[path] = content
    for name in LICENSE_NAMES:
        if name in members:
            contents[f"{package.folder}/LICENSE"] = members[name]
            break
    return Fetched(VendorPackage(pinned.name, resolved, integrity, tuple(files)), contents)


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        response = client.get(url, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise RefreshFailed(f"Expected an answer from {url}, received {exc!r}.") from exc
    if response.status_code != 200:
        raise RefreshFailed(f"Expected HTTP 200 from {url}, received {response.status_code}.")
    return response


def _matches(data: bytes, integrity: str) -> bool:
    """Whether `data` matches one of the SRI values in `integrity` (npm's `dist.integrity`)."""
    for value in integrity.split():
        algorithm, _, digest = value.partition("-")
        if algorithm in ("sha512", "sha384", "sha256"):
            actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
            if actual == digest:
                return True
    return False


def _read_tarball(tarball: bytes, name: str, version: str) -> dict[str, bytes]:
    """The regular files of an npm tarball, by path inside the package (its top folder, named
    `package/` by npm, dropped)."""
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                _, _, inside = member.name.partition("/")
                extracted = archive.extractfile(member)
                if inside and extracted is not None:
                    members[inside] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise RefreshFailed(
            f"Expected a gzipped tarball for {name}@{version}, received {exc}."
        ) from exc
    return members


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/refresh-graphiql",
        description="Fetch GraphiQL's files from the npm registry and rewrite their pins.",
    )
    parser.add_argument(
        "packages",
        nargs="*",
        metavar="name@version",
        help="a package of the manifest at another version or dist-tag (graphiql@3.9.0, "
        "react@latest); the others are fetched again at their pinned versions",
    )
    parser.add_argument("--registry", default=DEFAULT_REGISTRY, help="npm registry base URL")
    args = parser.parse_args(argv)
    versions = {}
    for spec in args.packages:
        name, at, version = spec.rpartition("@")
        if not at or not name or not version:
            parser.error(f"expected name@version, received {spec!r}")
        versions[name] = version
    root = Path(__file__).resolve().parent
    try:
        with httpx.Client(timeout=60) as client:
            manifest = refresh(client, root, versions, registry=args.registry)
    except RefreshFailed as exc:
        print(f"refresh-graphiql: {exc}", file=sys.stderr)
        return 1
    for package in manifest.packages:
        print(f"{package.name}@{package.version}")
        for file in package.files:
            size = (root / VENDOR / file.path).stat().st_size
            print(f"  {file.path} ({size} bytes) {file.integrity}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
