"""What GraphiQL's page loads, as the package ships it: pinned npm files and the gateway's own
start script and style sheet.

`assets.json` (the manifest) pins each npm package's version and tarball hash and gives each
file its SRI hash; `scripts/refresh-graphiql` rewrites it. `load_assets()` reads every file from
the installed package and checks it against its hash, so a file the gateway serves is always the
one the page's `integrity=` names.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

#: The manifest and the folder of npm files, inside this package.
MANIFEST = "assets.json"
VENDOR = "vendor"
#: The gateway's own files, inside this package, in the order the page loads them.
OWN_FILES = ("page.css", "start.js")

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def sri(data: bytes) -> str:
    """The Subresource Integrity value of `data` (`sha384-<base64>`), as `integrity=` takes."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@dataclass(frozen=True, slots=True)
class VendorFile:
    """One file of an npm package: `source` in the tarball, stored and served at `path`."""

    source: str
    path: str
    integrity: str


@dataclass(frozen=True, slots=True)
class VendorPackage:
    """An npm package at a pinned version; `integrity` is its tarball's, as the registry says."""

    name: str
    version: str
    integrity: str
    files: tuple[VendorFile, ...]

    @property
    def folder(self) -> str:
        """Where its files live (and are served): `<name without scope>-<version>`."""
        return f"{self.name.rpartition('/')[2]}-{self.version}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """The npm packages the page loads, in the order it loads them."""

    packages: tuple[VendorPackage, ...]

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        document = json.loads(text)
        return cls(
            tuple(
                VendorPackage(
                    name=package["name"],
                    version=package["version"],
                    integrity=package["integrity"],
                    files=tuple(VendorFile(**file) for file in package["files"]),
                )
                for package in document["packages"]
            )
        )

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "packages": [
                {
                    "name": package.name,
                    "version": package.version,
                    "integrity": package.integrity,
                    "files": [
                        {"source": file.source, "path": file.path, "integrity": file.integrity}
                        for file in package.files
                    ],
                }
                for package in self.packages
            ]
        }
        return json.dumps(document, indent=2) + "\n"


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the page loads, served at `graphiql/<path>`. `path` names its version (an npm
    version, or for the gateway's own files a digest of their content), so it never changes
    behind its URL."""

    path: str
    content: bytes
    integrity: str

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.path[self.path.rindex(".") :]]

    @property
    def is_script(self) -> bool:
        return self.path.endswith(".js")


class AssetMismatch(Exception):
    """A shipped file does not hash to what the manifest says: the package is damaged, or a file
    was edited without `scripts/refresh-graphiql`."""

    def __init__(self, path: str, expected: str, received: str) -> None:
        super().__init__(
            f"Expected GraphiQL's {path} to hash to {expected}, received {received}: run "
            "scripts/refresh-graphiql to restore the files the manifest pins."
        )
        self.path = path


def package_root() -> Traversable:
    return resources.files(__package__ or "gateway.graphiql")


def read_manifest(root: Traversable | None = None) -> Manifest:
    root = root or package_root()
    return Manifest.from_json((root / MANIFEST).read_text(encoding="utf-8"))


def load_assets(root: Traversable | None = None) -> tuple[Asset, ...]:
    """Every file the page loads, in page order (npm packages as the manifest lists them, then
    the gateway's own), each checked against its hash.

    Raises `AssetMismatch` for a file that does not match the manifest.
    """
    root = root or package_root()
    assets = []
    for package in read_manifest(root).packages:
        for file in package.files:
            content = (root / VENDOR).joinpath(*file.path.split("/")).read_bytes()
            if (actual := sri(content)) != file.integrity:
                raise AssetMismatch(file.path, file.integrity, actual)
            assets.append(Asset(file.path, content, file.integrity))
    for name in OWN_FILES:
        content = (root / name).read_bytes()
        integrity = sri(content)
        # A digest of the content as the version: an edited file gets a new URL, so a browser
        # never mixes a cached old copy with a new page.
        version = hashlib.sha256(content).hexdigest()[:12]
        assets.append(Asset(f"gateway-{version}/{name}", content, integrity))
    return tuple(assets)
