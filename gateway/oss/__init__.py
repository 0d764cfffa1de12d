"""OSS, the object store jobs read from and write to: what the gateway computes about it locally."""

from gateway.oss.presign import MAX_EXPIRES_SECONDS, MIN_EXPIRES_SECONDS, OssPresigner

__all__ = ["MAX_EXPIRES_SECONDS", "MIN_EXPIRES_SECONDS", "OssPresigner"]
