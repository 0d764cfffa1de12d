"""OSS URLs as MPS takes them (`oss://<bucket>.oss-<region>.aliyuncs.com/<key>`) and Output
templates (`{source}`, `{timestamp}`, `{sequenceId}`, `{resultType}`): docs/upstream.md sections 1.6
and 6.2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Bucket names: 3-63 characters, lower-case letters, digits and hyphens, no hyphen at either end.
_OSS_URL = re.compile(
    r"oss://(?P<bucket>[a-z0-9][a-z0-9-]{1,61}[a-z0-9])"
    r"\.oss-(?P<region>[a-z0-9-]+?)(?P<internal>-internal)?\.aliyuncs\.com/(?P<key>[^\x00]+)"
)


@dataclass(frozen=True, slots=True)
class OssUrl:
    bucket: str
    region: str
    key: str

    @property
    def file_stem(self) -> str:
        """The object's file name without its extension: what `{source}` stands for."""
        name = self.key.rsplit("/", 1)[-1]
        stem, dot, _ = name.rpartition(".")
        return stem if dot and stem else name


def parse_oss_url(text: str) -> OssUrl | None:
    """The parts of an MPS-style OSS URL, or None if `text` is not one."""
    match = _OSS_URL.fullmatch(text)
    if match is None:
        return None
    return OssUrl(match["bucket"], match["region"], match["key"])


def render_key(
    template: str,
    *,
    source: str,
    timestamp: str,
    sequence_id: int,
    result_type: str | None = None,
) -> str:
    """An object key from an Output key template. Unknown placeholders are left as they are."""
    key = (
        template.replace("{source}", source)
        .replace("{timestamp}", timestamp)
        .replace("{sequenceId}", str(sequence_id))
    )
    if result_type is not None:
        key = key.replace("{resultType}", result_type)
    return key
