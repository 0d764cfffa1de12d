"""Where persisted documents live: the store of automatic persisted queries (this process's
memory, Redis shared by the fleet, and the failover between them) and the trusted-documents
manifest. The protocol itself, and what each request may run, is `gateway.api.persisted`."""

from gateway.persisted.manifest import ManifestError, load_manifest
from gateway.persisted.store import FailoverDocumentStore, LocalDocumentStore, RedisDocumentStore

__all__ = [
    "FailoverDocumentStore",
    "LocalDocumentStore",
    "ManifestError",
    "RedisDocumentStore",
    "load_manifest",
]
