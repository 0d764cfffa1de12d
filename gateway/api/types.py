"""The GraphQL types of a job, built from the domain model with `from_model()`.

The domain object stays private to each type. Fields the upstream may send garbled (`input`,
`output`, `params`, `result`) have resolvers that raise `UpstreamBadResponse` for that field alone,
so a client gets an error at that path and every other field of the job.
"""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import strawberry
from strawberry.relay import PageInfo
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway import errors, model
from gateway.api.arguments import Range
from gateway.api.context import Context
from gateway.api.pages import Page
from gateway.oss import MAX_EXPIRES_SECONDS, MIN_EXPIRES_SECONDS


@strawberry.enum(description="Where a job is in its life. SUCCESS and FAIL are final.")
class JobState(enum.Enum):
    QUEUING = strawberry.enum_value("Queuing", description="Waiting in its pipeline's queue.")
    ANALYSING = strawberry.enum_value("Analysing", description="Being processed.")
    SUCCESS = strawberry.enum_value("Success", description="Finished; its result lists the files.")
    FAIL = strawberry.enum_value("Fail", description="Finished without a result; see result.code.")
    UNKNOWN = strawberry.enum_value(
        "Unknown",
        description="A state this gateway does not know yet; rawState holds the upstream's text.",
    )


@strawberry.enum(
    description="The smart-production algorithms the MPS documentation lists. The upstream may "
    "run others: Job.functionName always holds the name as sent."
)
class Algorithm(enum.Enum):
    VIDEO_H2V = strawberry.enum_value("VideoH2V", description="Landscape video to portrait.")
    VIDEO_DELOGO = strawberry.enum_value("VideoDelogo", description="Remove a logo from a video.")
    COVER = strawberry.enum_value("Cover", description="Pick cover images for a video.")
    VIDEO_CLIP = strawberry.enum_value("VideoClip", description="Summarize a video into clips.")
    IMAGE_MATTING = strawberry.enum_value("ImageMatting", description="Cut a figure out.")
    IMAGE_H2V = strawberry.enum_value("ImageH2V", description="Landscape image to portrait.")
    IMAGE_DELOGO = strawberry.enum_value("ImageDelogo", description="Remove a logo from an image.")
    CAPTION_EXTRACTION = strawberry.enum_value(
        "CaptionExtraction", description="Extract burnt-in captions into SRT files."
    )
    VIDEO_DETEXT = strawberry.enum_value("VideoDetext", description="Remove captions from video.")
    VIDEO_GREEN_SCREEN_MATTING = strawberry.enum_value(
        "VideoGreenScreenMatting", description="Green-screen matting of a video."
    )
    MUSIC_SEGMENT_DETECT = strawberry.enum_value(
        "MusicSegmentDetect", description="Find the chorus of a song."
    )
    AUDIO_MIXING = strawberry.enum_value("AudioMixing", description="Mix audio tracks.")
    VIDEO_SPLIT = strawberry.enum_value("VideoSplit", description="Split a slide-show video.")
    AUDIO_BEAT_DETECTION = strawberry.enum_value(
        "AudioBeatDetection", description="Find the beats and downbeats of music."
    )
    IMAGE_CARTOONIZE = strawberry.enum_value(
        "ImageCartoonize", description="Cartoon (3D) styling of faces."
    )
    AUDIO_QUALITY_ASSESSMENT = strawberry.enum_value(
        "AudioQualityAssessment", description="Score the quality of a 16-bit WAV recording."
    )
    FACE_BEAUTY = strawberry.enum_value("FaceBeauty", description="Beautify faces in a video.")
    SPEECH_DENOISE = strawberry.enum_value("SpeechDenoise", description="Reduce speech noise.")


# strawberry.enum_value() hides the plain values from type checkers; at run time they are strings.
_ALGORITHMS: dict[str, Algorithm] = {cast(str, member.value): member for member in Algorithm}
_STATES: dict[str, JobState] = {cast(str, member.value): member for member in JobState}


_SIGNED_URL = (
    "A presigned https URL (OSS signature V4) that downloads {what} until it expires, for "
    "private buckets too; null {null}. Signed by the gateway: no credential reaches the client, "
    "only the gateway's AccessKey id appears in the URL (and the STS token when the gateway runs "
    "on temporary credentials), as OSS requires. It opens only if the gateway's key may "
    "oss:GetObject on the bucket, and stops working after expiresInSeconds (or when the "
    "gateway's STS token expires, if sooner). Computed locally: costs no upstream call."
)
EXPIRES_RANGE = Range(MIN_EXPIRES_SECONDS, MAX_EXPIRES_SECONDS, unit="seconds", note="7 days")
#: The share of a signed URL's validity an answer holding it may be kept for.
SIGNED_URL_KEEP_SHARE = 0.1
_EXPIRES_IN = (
    f"How long the URL stays valid, {EXPIRES_RANGE}; outside that range the field fails with "
    "INVALID_ARGUMENT."
)


def _signed_url(
    info: Info[Context, None], obj: model.OssObject | None, expires_in: int
) -> str | None:
    """The presigned URL of `obj`, or None; the argument is checked even when there is no URL, so
    a bad value is reported the same way for every object."""
    EXPIRES_RANGE.check("expiresInSeconds", expires_in)
    presigner = info.context.presigner
    if obj is None or presigner is None:
        return None
    # Kept while the URL has most of the validity asked for left (an answer kept longer would
    # hand out a URL that expires sooner than the client asked).
    if info.context.cacheability is not None:
        info.context.cacheability.keep_at_most(expires_in * SIGNED_URL_KEEP_SHARE)
    return presigner.presign_get(obj, expires_in)


@strawberry.type(description="An object, or an object-key template, in an OSS bucket.")
class OssObject:
    bucket: str = strawberry.field(description="The bucket name.")
    endpoint: str = strawberry.field(
        description="The OSS endpoint host without the bucket, e.g. oss-cn-shanghai.aliyuncs.com."
    )
    region: str | None = strawberry.field(
        description="The region the endpoint names (cn-shanghai), null for a custom endpoint."
    )
    key: str = strawberry.field(
        description="The object key; for a template, placeholders such as {source} included."
    )
    name: str = strawberry.field(description="The last segment of the key: the file name.")
    content_type: str | None = strawberry.field(
        description="The media type guessed from the file name, null when unknown."
    )
    is_template: bool = strawberry.field(
        description="Whether the key still holds placeholders ({source}, {timestamp}, ...)."
    )
    oss_url: str = strawberry.field(description="The oss:// URL, as MPS writes it.")
    url: str | None = strawberry.field(
        description="The https URL (virtual-host style), null for a template. It opens only "
        "public-read objects; private ones need signedUrl."
    )
    _object: strawberry.Private[model.OssObject]

    @strawberry.field(
        description=_SIGNED_URL.format(
            what="the object",
            null="for a template or an object the gateway cannot sign (its region is unknown)",
        )
    )
    def signed_url(
        self,
        info: Info[Context, None],
        expires_in_seconds: Annotated[int, strawberry.argument(description=_EXPIRES_IN)] = 3600,
    ) -> str | None:
        obj = None if self._object.is_template else self._object
        return _signed_url(info, obj, expires_in_seconds)

    @classmethod
    def from_model(cls, obj: model.OssObject) -> OssObject:
        return cls(
            bucket=obj.bucket,
            endpoint=obj.endpoint,
            region=obj.region,
            key=obj.key,
            name=obj.name,
            content_type=obj.content_type,
            is_template=obj.is_template,
            oss_url=obj.oss_url,
            url=None if obj.is_template else obj.https_url,
            _object=obj,
        )


@strawberry.type(description="A file a job produced.")
class ResultFile:
    key: str = strawberry.field(description="The object key, as the job's result names it.")
    name: str = strawberry.field(description="The file name: the last segment of the key.")
    content_type: str | None = strawberry.field(
        description="The media type guessed from the file name, null when unknown."
    )
    bucket: str | None = strawberry.field(
        description="The bucket holding the file (the job output's), null when unknown."
    )
    region: str | None = strawberry.field(description="The region of that bucket.")
    url: str | None = strawberry.field(
        description="The https URL of the file (public-read objects only; private ones need "
        "signedUrl), null when the bucket is unknown."
    )
    oss_url: str | None = strawberry.field(description="The oss:// URL of the file.")
    _object: strawberry.Private[model.OssObject | None]

    @strawberry.field(
        description=_SIGNED_URL.format(
            what="the file",
            null="when the bucket is unknown or the gateway cannot sign it (its region is unknown)",
        )
    )
    def signed_url(
        self,
        info: Info[Context, None],
        expires_in_seconds: Annotated[int, strawberry.argument(description=_EXPIRES_IN)] = 3600,
    ) -> str | None:
        return _signed_url(info, self._object, expires_in_seconds)

    @classmethod
    def from_model(cls, file: model.ResultFile) -> ResultFile:
        obj = file.object
        name = file.key.rsplit("/", 1)[-1]
        return cls(
            key=file.key,
            name=name,
            content_type=model.content_type_of(name),
            bucket=obj.bucket if obj else None,
            region=obj.region if obj else None,
            url=obj.https_url if obj else None,
            oss_url=obj.oss_url if obj else None,
            _object=obj,
        )


_FIRST = (
    "How many files at most: from 0 to the gateway's maximum page size (GATEWAY_MAX_PAGE_SIZE, "
    "100 unless the operator set another), which is also what no first (or null) asks for. "
    "Outside that range the field fails with INVALID_ARGUMENT."
)
_AFTER = (
    "Start after the file this cursor names: an edge's cursor, or the previous page's "
    "pageInfo.endCursor; no after (or null) starts at the first file. Cursors are opaque: text "
    "this connection did not give is INVALID_ARGUMENT. A result's files never change order, so "
    "a cursor names the same file in every answer about the same job."
)


@strawberry.type(description="A file of a job's result with its position in the result's files.")
class ResultFileEdge:
    cursor: str = strawberry.field(
        description="An opaque cursor naming this file's position: pass it as filesConnection's "
        "after to ask for the files that follow."
    )
    node: ResultFile = strawberry.field(description="The file.")


@strawberry.type(
    description="A page of a job's result files (a Relay connection): at most the gateway's "
    "maximum page size of them, with the cursors to ask for the next page."
)
class ResultFileConnection:
    edges: list[ResultFileEdge] = strawberry.field(
        description="The files of this page, in the result's order, each with its cursor."
    )
    nodes: list[ResultFile] = strawberry.field(
        description="The same files as edges, without their cursors."
    )
    page_info: PageInfo = strawberry.field(
        description="Where this page stands: whether files follow it (hasNextPage) and the "
        "cursor to ask for them with (endCursor); whether files precede it (hasPreviousPage)."
    )
    total_count: int = strawberry.field(
        description="How many files the result has in all, on every page together."
    )


@strawberry.type(description="The outcome of a job, decoded from the upstream's Result.")
class JobResult:
    code: str | None = strawberry.field(
        description="Success, or the failure code the upstream gave."
    )
    message: str | None = strawberry.field(description="The upstream's message about the job.")
    succeeded: bool = strawberry.field(description="Whether code is Success.")
    data: JSON | None = strawberry.field(
        description="The result's Data, decoded from its JSON string (algorithm-specific)."
    )
    _files: strawberry.Private[tuple[model.ResultFile, ...]]

    @strawberry.field(
        description="The first files the job produced, in the result's order: a plain list for "
        "clients that need no paging. A result with more files than first lists only the first "
        "ones; filesConnection pages through all of them and counts them (totalCount)."
    )
    def files(
        self,
        info: Info[Context, None],
        first: Annotated[int | None, strawberry.argument(description=_FIRST)] = None,
    ) -> list[ResultFile]:
        page = Page.select(
            len(self._files), first=first, after=None, max_size=info.context.max_page_size
        )
        return self._views(page)

    @strawberry.field(
        description="The files the job produced, a page at a time (a Relay connection, for "
        "Relay's @connection, Apollo's relayStylePagination and urql): first files after the "
        "cursor after, with pageInfo and totalCount. Pages hold at most the gateway's maximum "
        "page size, so no result, however many files it lists, makes one answer too long."
    )
    def files_connection(
        self,
        info: Info[Context, None],
        first: Annotated[int | None, strawberry.argument(description=_FIRST)] = None,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = None,
    ) -> ResultFileConnection:
        page = Page.select(
            len(self._files), first=first, after=after, max_size=info.context.max_page_size
        )
        files = self._views(page)
        cursors = page.cursors()
        return ResultFileConnection(
            edges=[ResultFileEdge(cursor=c, node=f) for c, f in zip(cursors, files, strict=True)],
            nodes=files,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=cursors[0] if cursors else None,
                end_cursor=cursors[-1] if cursors else None,
            ),
            total_count=page.total,
        )

    def _views(self, page: Page) -> list[ResultFile]:
        # Made per request for the page alone: at most a page's worth, however long the result.
        return [ResultFile.from_model(file) for file in self._files[page.start : page.end]]

    @classmethod
    def from_model(cls, result: model.JobResult) -> JobResult:
        return cls(
            code=result.code,
            message=result.message,
            succeeded=result.succeeded,
            data=cast(JSON, result.data),
            _files=result.files,
        )


@strawberry.interface(
    description="An object with a globally unique id, refetchable with Query.node (the Relay "
    "convention; Apollo and urql caches normalize on it too)."
)
class Node:
    id: strawberry.ID = strawberry.field(description="The object's unique id.")


@strawberry.type(description="A smart-production job, as the upstream last described it.")
class Job(Node):
    id: strawberry.ID = strawberry.field(description="The job id (32 hex characters).")
    state: JobState = strawberry.field(description="Where the job is in its life.")
    raw_state: str = strawberry.field(description="The State text as the upstream sent it.")
    is_finished: bool = strawberry.field(
        description="Whether the state is final (SUCCESS or FAIL): the job will not change again."
    )
    function_name: str | None = strawberry.field(
        description="The algorithm's name as sent, known or not."
    )
    algorithm: Algorithm | None = strawberry.field(
        description="The algorithm, null when the name is not one this gateway knows."
    )
    input_url: str | None = strawberry.field(description="The job's input, as submitted.")
    output_template: str | None = strawberry.field(
        description="The job's output URL template, placeholders included, as submitted."
    )
    pipeline_id: str | None = strawberry.field(description="The MPS pipeline running the job.")
    user_data: str | None = strawberry.field(
        description="The user data given at submission, null when none."
    )
    request_id: str | None = strawberry.field(
        description="The upstream RequestId of the call that fetched this snapshot: quote it "
        "in support tickets."
    )
    fetched_at: datetime = strawberry.field(description="When the upstream gave this snapshot.")
    _model: strawberry.Private[model.Job]
    _result_view: strawberry.Private[JobResult | None] = None

    @classmethod
    def from_model(cls, job: model.Job) -> Job:
        return cls(
            id=strawberry.ID(job.id),
            state=_STATES[job.state.value],
            raw_state=job.raw_state,
            is_finished=job.state.is_terminal,
            function_name=job.function_name,
            algorithm=_ALGORITHMS.get(job.function_name or ""),
            input_url=job.input_url,
            output_template=job.output_url,
            pipeline_id=job.pipeline_id,
            user_data=job.user_data,
            request_id=job.request_id,
            fetched_at=datetime.fromtimestamp(job.fetched_at, tz=UTC),
            _model=job,
        )

    @strawberry.field(description="How many seconds old this snapshot is.")
    def age_seconds(self, info: Info[Context, None]) -> float:
        info.context.moves("ageSeconds")
        return round(max(0.0, time.time() - self._model.fetched_at), 3)

    @strawberry.field(description="The job's input, when it is an OSS object.")
    def input(self) -> OssObject | None:
        value = self._decoded(self._model.input)
        return OssObject.from_model(value) if value is not None else None

    @strawberry.field(description="Where the job writes its files: bucket and key template.")
    def output(self) -> OssObject | None:
        value = self._decoded(self._model.output)
        return OssObject.from_model(value) if value is not None else None

    @strawberry.field(
        description="The algorithm's parameters, decoded from the relaxed JSON the upstream "
        'keeps (such as {mode:"gif"}).'
    )
    def params(self) -> JSON | None:
        return cast(JSON | None, self._decoded(self._model.params))

    @strawberry.field(description="The outcome, once the job has one.")
    def result(self) -> JobResult | None:
        value = self._decoded(self._model.result)
        if value is None:
            return None
        # Built once per view: a shared view (see `gateway.api.views`) is read again and again.
        if self._result_view is None:
            self._result_view = JobResult.from_model(value)
        return self._result_view

    def _decoded(self, value: Any) -> Any:
        if isinstance(value, model.Malformed):
            raise errors.UpstreamBadResponse(
                # The reason is a sentence of its own, full stop included.
                f"The upstream's {value.field} cannot be decoded: {value.reason}",
                request_id=self._model.request_id,
            )
        return value
