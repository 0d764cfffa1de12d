"""What a smart-production job is, as the gateway understands it.

Frozen dataclasses only: no I/O, no GraphQL, no httpx. `gateway.mps.decode` builds them from the
upstream's stringly typed answer; the API layer builds GraphQL types from them.
"""

from __future__ import annotations

import enum
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import quote

JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None"

# Built from Python's own table, not the host's /etc/mime.types, so that a file's content type is
# the same on every machine; plus the media types smart production writes that Python lacks.
_MIME_TYPES = mimetypes.MimeTypes(filenames=())
_MIME_TYPES.add_type("application/x-subrip", ".srt")
_MIME_TYPES.add_type("video/webm", ".webm")
_MIME_TYPES.add_type("audio/mp4", ".m4a")


def content_type_of(file_name: str) -> str | None:
    """The media type a file name suggests, None when unknown; the same on every host."""
    return _MIME_TYPES.guess_type(file_name, strict=False)[0]


class JobState(enum.Enum):
    """The `State` of a job. `UNKNOWN` stands for any value the upstream may add later."""

    QUEUING = "Queuing"
    ANALYSING = "Analysing"
    SUCCESS = "Success"
    FAIL = "Fail"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, raw: str) -> JobState:
        """The state named by `raw`, or UNKNOWN: a new upstream value must never crash a query."""
        try:
            state = cls(raw)
        except ValueError:
            return cls.UNKNOWN
        return state

    @property
    def is_terminal(self) -> bool:
        """A terminal snapshot never changes again, so it may be cached for long."""
        return self in (JobState.SUCCESS, JobState.FAIL)


#: Every FunctionName the MPS documentation lists (docs/upstream.md section 1.4). The upstream
#: may name others: FunctionName stays an open string, this set only marks the known ones.
KNOWN_FUNCTIONS: tuple[str, ...] = (
    "VideoH2V",
    "VideoDelogo",
    "Cover",
    "VideoClip",
    "ImageMatting",
    "ImageH2V",
    "ImageDelogo",
    "CaptionExtraction",
    "VideoDetext",
    "VideoGreenScreenMatting",
    "MusicSegmentDetect",
    "AudioMixing",
    "VideoSplit",
    "AudioBeatDetection",
    "ImageCartoonize",
    "AudioQualityAssessment",
    "FaceBeauty",
    "SpeechDenoise",
)


@dataclass(frozen=True, slots=True)
class OssObject:
    """An object (or, for a job's Output, an object-key template) in an OSS bucket."""

    bucket: str
    #: The OSS endpoint host without the bucket, e.g. `oss-cn-hangzhou.aliyuncs.com`.
    endpoint: str
    key: str
    #: The region named by the endpoint (`cn-hangzhou`), None for a custom endpoint.
    region: str | None = None

    @property
    def oss_url(self) -> str:
        return f"oss://{self.bucket}.{self.endpoint}/{self.key}"

    @property
    def https_url(self) -> str:
        """Virtual-host style URL; it only opens public-read objects (private ones need a
        presigned URL)."""
        # surrogatepass: a key decoded from JSON may hold a lone surrogate; it must not crash here.
        path = quote(self.key, safe="/", errors="surrogatepass")
        return f"https://{self.bucket}.{self.endpoint}/{path}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def content_type(self) -> str | None:
        return content_type_of(self.name)

    @property
    def is_template(self) -> bool:
        """Whether the key still holds placeholders such as `{source}` (job Output templates)."""
        return "{" in self.key and "}" in self.key


@dataclass(frozen=True, slots=True)
class ResultFile:
    """A file a job produced, as named in `Result.Data.result[].file`."""

    key: str
    #: The object, with bucket and endpoint taken from the job's Output; None when the job has no
    #: usable Output to resolve the key against.
    object: OssObject | None


@dataclass(frozen=True, slots=True)
class JobResult:
    """The decoded `Result` of a job: `{"Code", "Message", "Data"}` with `Data` decoded too."""

    code: str | None
    message: str | None
    files: tuple[ResultFile, ...]
    #: `Data` decoded from its JSON string (or kept as the string when it is not JSON).
    data: JsonValue

    @property
    def succeeded(self) -> bool:
        return self.code == "Success"


@dataclass(frozen=True, slots=True)
class Malformed:
    """Stands in for a field whose upstream value could not be decoded.

    Only that field fails (the API reports an error at its path); the rest of the job is served.
    """

    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Job:
    """One snapshot of a job, as QueryIProductionJob answered at `fetched_at`."""

    id: str
    state: JobState
    #: The State text as the upstream sent it (differs from `state.value` for UNKNOWN).
    raw_state: str
    function_name: str | None
    #: The Input as sent; `input` is its decoded form when it is an OSS URL.
    input_url: str | None
    input: OssObject | Malformed | None
    #: The Output template as sent, placeholders included.
    output_url: str | None
    output: OssObject | Malformed | None
    pipeline_id: str | None
    params: JsonValue | Malformed
    #: The caller's own user data (the gateway's envelope removed, see `gateway.callers.envelope`).
    user_data: str | None
    result: JobResult | Malformed | None
    #: The upstream RequestId of the call that produced this snapshot (for support tickets).
    request_id: str | None
    #: Wall-clock time (Unix seconds) at which the upstream answered.
    fetched_at: float
    #: The tenant that submitted the job through the gateway; None for a job submitted outside
    #: it (or by a caller with no tenant).
    owner: str | None = None
    #: The upstream body this snapshot was decoded from; what shared caches store.
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """What SubmitIProductionJob answered."""

    job_id: str
    request_id: str | None
