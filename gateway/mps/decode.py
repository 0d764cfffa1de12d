"""The upstream's stringly typed answers, decoded into domain models.

QueryIProductionJob answers with a flat object whose fields are all strings (docs/upstream.md
section 1.2), some of which hold further encodings: `JobParams` is relaxed JSON (`{mode:"gif"}`),
`Result` is a JSON string whose `Data` is another JSON string, `Input` and `Output` are OSS URLs.

Guarantees:
- `decode_job` never raises for a JSON-shaped body. A field it cannot decode becomes `Malformed`
  (that field alone fails; the rest of the job is served), and a non-string value is read as the
  JSON text of that value, as if the upstream had sent it as a string (`5` -> `"5"`, `{...}` ->
  `'{...}'`); `null` is read as absent.
- `decode_job` is a pure function of its arguments: `Job.raw` holds the body's fields as text
  (after the reading above), so `decode_job(job.raw, fetched_at=job.fetched_at)` rebuilds an equal
  Job. That is what shared caches store.
- Nothing here performs I/O or logs, and error messages never echo the query string of an https
  URL (where presigned credentials travel).

Lower-layer failures raise `DecodeError` (a `ValueError`); the client maps it to
UPSTREAM_BAD_RESPONSE.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

import json5

from gateway.callers.envelope import unwrap
from gateway.model import (
    Job,
    JobResult,
    JobState,
    JsonValue,
    Malformed,
    OssObject,
    ResultFile,
    SubmittedJob,
)

__all__ = [
    "DecodeError",
    "MissingJobId",
    "OssUrlError",
    "decode_job",
    "decode_submit",
    "parse_oss_url",
]


class DecodeError(ValueError):
    """An upstream value the gateway cannot turn into its domain model."""


class OssUrlError(DecodeError):
    """A text that is not an OSS URL of a form `parse_oss_url` knows."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            "Expected an OSS URL such as oss://<bucket>.oss-<region>.aliyuncs.com/<key>, "
            f"received {_shown(url)}: {reason}."
        )
        self.reason = reason


class MissingJobId(DecodeError):
    """An answer that should name a job and does not."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"Expected a JobId in the {operation} response, received none.")
        self.operation = operation


# `<bucket>.oss-<region>[-internal].aliyuncs.com`. Bucket names are lowercase letters, digits and
# hyphens; `*` is allowed too because the documentation masks ids with it (`example-****`), and
# the simulator serves the documentation's examples.
_BUCKET: Final = r"[a-z0-9*][a-z0-9*-]{0,62}"
_OSS_HOST: Final = re.compile(
    rf"(?P<bucket>{_BUCKET})\."
    r"(?P<endpoint>oss-(?P<region>[a-z0-9]+(?:-[a-z0-9]+)*?)(?:-internal)?\.aliyuncs\.com)"
)
_BARE_BUCKET: Final = re.compile(_BUCKET)
# Transfer-acceleration endpoints serve every region: they name none.
_REGIONLESS_ENDPOINTS: Final = frozenset({"accelerate", "accelerate-overseas"})
_SHOWN_MAX: Final = 120


def parse_oss_url(url: str, *, region: str | None = None) -> OssObject:
    """The OSS object `url` names.

    Accepted forms (scheme and host case-insensitive, leading whitespace ignored):
    - `oss://<bucket>.oss-<region>.aliyuncs.com/<key>`, and the `-internal` endpoints: the key is
      the text after the first `/`, byte for byte (oss:// URLs are not percent-encoded, and keys may
      hold spaces, `%`, `?`, `#` and `{placeholders}`);
    - `https://` (or `http://`) with the same host: the key is the percent-decoded path, and the
      query string (a presigned URL's signature) is dropped;
    - `oss://<bucket>/<key>`, which names no endpoint: MPS only reads buckets of the region it runs
      in (docs/upstream.md section 1.6), so with `region` given the endpoint is
      `oss-<region>.aliyuncs.com`; without it the URL cannot be placed and is refused.

    `region` of the result is the one the endpoint names, or None for a transfer-acceleration
    endpoint. Raises `OssUrlError` (a ValueError) with a sentence saying what is wrong.
    """
    text = url.lstrip()
    scheme, separator, rest = text.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise OssUrlError(url, "it has no oss:// or https:// scheme")
    if scheme == "oss":
        host, _, key = rest.partition("/")
        host = host.lower()
    elif scheme in ("https", "http"):
        try:
            parts = urlsplit(text)
            host = parts.hostname or ""
        except ValueError:
            raise OssUrlError(url, "it is not a well-formed URL") from None
        key = unquote(parts.path[1:])
    else:
        raise OssUrlError(url, "its scheme is neither oss:// nor https://")

    if not host:
        raise OssUrlError(url, "it names no bucket")
    if match := _OSS_HOST.fullmatch(host):
        bucket, endpoint = match["bucket"], match["endpoint"]
        named_region: str | None = match["region"]
        if named_region in _REGIONLESS_ENDPOINTS:
            named_region = None
    elif scheme == "oss" and _BARE_BUCKET.fullmatch(host):
        if region is None:
            raise OssUrlError(url, "it names a bucket but no endpoint, and no region was given")
        bucket, endpoint, named_region = host, f"oss-{region}.aliyuncs.com", region
    else:
        raise OssUrlError(url, "its host is not <bucket>.oss-<region>.aliyuncs.com")
    if not key:
        raise OssUrlError(url, "it names no object key")
    return OssObject(bucket=bucket, endpoint=endpoint, key=key, region=named_region)


def decode_job(
    body: Mapping[str, object],
    *,
    fetched_at: float,
    job_id: str | None = None,
    region: str | None = None,
) -> Job | None:
    """The job a QueryIProductionJob body describes, or None when it describes none.

    None means "no such smart-production job": the body has no usable `State` (missing, null, empty
    or blank; docs/upstream.md section 1.7), or neither the body nor `job_id` names the job.
    `job_id` is only a fallback for a body without `JobId`; a body's own JobId wins (the client may
    compare). A State that is present but unknown (`Succes`, or a non-string such as `3`) is
    `JobState.UNKNOWN` with the text in `raw_state`: the upstream knows the job, so it is no "not
    found". `region` places bucket-only `oss://<bucket>/<key>` URLs (see `parse_oss_url`); the
    rebuild guarantee holds for the same `region`.

    Never raises for a JSON-shaped body; undecodable fields become `Malformed`.
    """
    fields = _text_fields(body)
    if not _present(fields, "JobId") and job_id:
        fields["JobId"] = job_id
    identifier = _present(fields, "JobId")
    raw_state = _present(fields, "State")
    if identifier is None or raw_state is None:
        return None

    input_url = _present(fields, "Input")
    output_url = _present(fields, "Output")
    output = _decode_oss(output_url, "output", region)
    user_data = unwrap(_decode_user_data(fields.get("UserData")))
    return Job(
        id=identifier,
        state=JobState.parse(raw_state.strip()),
        raw_state=raw_state,
        function_name=_present(fields, "FunctionName"),
        input_url=input_url,
        input=_decode_oss(input_url, "input", region),
        output_url=output_url,
        output=output,
        pipeline_id=_present(fields, "PipelineId"),
        params=_decode_params(_present(fields, "JobParams")),
        user_data=user_data.user_data,
        result=_decode_result(_present(fields, "Result"), output),
        request_id=_present(fields, "RequestId"),
        fetched_at=fetched_at,
        owner=user_data.owner,
        raw=fields,
    )


def decode_submit(body: Mapping[str, object]) -> SubmittedJob:
    """What a SubmitIProductionJob body says: the new job's id and the RequestId.

    Raises `MissingJobId` (a ValueError) when the body names no job (JobId missing, null or blank).
    A non-string JobId is read as its JSON text, as in `decode_job`.
    """
    fields = _text_fields(body)
    job_id = _present(fields, "JobId")
    if job_id is None:
        raise MissingJobId("SubmitIProductionJob")
    return SubmittedJob(job_id=job_id, request_id=_present(fields, "RequestId"))


def _text_fields(body: Mapping[str, object]) -> dict[str, str]:
    """The body's fields as text: strings as they are, null dropped, anything else as JSON text.

    Keeps every field, known or not, so that a later decoder can read new upstream fields out of
    cached snapshots. Idempotent: a str-to-str mapping comes back equal, which is what makes
    `decode_job(job.raw, ...)` rebuild the same job.
    """
    fields: dict[str, str] = {}
    for name, value in body.items():
        if not isinstance(name, str) or value is None:
            continue
        fields[name] = value if isinstance(value, str) else _json_text(value)
    return fields


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        # Not JSON-shaped at all (a set, a cycle, nesting deeper than the stack): a placeholder
        # keeps the field visibly present, and it decodes as Malformed where a value is expected.
        return f"<unserializable {type(value).__name__}>"


def _present(fields: Mapping[str, str], name: str) -> str | None:
    """The field's text, or None when it is missing or blank (how the upstream says "none")."""
    value = fields.get(name)
    return value if value is not None and value.strip() else None


def _decode_oss(url: str | None, field: str, region: str | None) -> OssObject | Malformed | None:
    if url is None:
        return None
    try:
        return parse_oss_url(url, region=region)
    except OssUrlError as exc:
        return Malformed(field=field, reason=str(exc))


def _decode_params(text: str | None) -> JsonValue | Malformed:
    """JobParams as submitted: JSON, or relaxed JSON such as `{mode:"gif"}`
    (docs/upstream.md §1.2)."""
    if text is None:
        return None
    try:
        # Strict JSON first: it is the common case, and json5 (pure Python) is ~100x slower.
        strict: JsonValue = json.loads(text)
    except (ValueError, RecursionError):
        pass
    else:
        return _carried_params(strict)
    try:
        relaxed: JsonValue = json5.loads(text)
    except RecursionError:
        return Malformed(field="params", reason="JobParams nests too deeply to decode.")
    except ValueError as exc:
        # json5 names the offending character and column, never a longer excerpt of the value.
        detail = str(exc).removeprefix("<string>:")
        return Malformed(
            field="params", reason=f"JobParams is neither JSON nor relaxed JSON (JSON5): {detail}."
        )
    return _carried_params(relaxed)


def _carried_params(value: JsonValue) -> JsonValue | Malformed:
    """Decoded JobParams, or Malformed when they cannot go out in a JSON response.

    Both parsers accept numbers JSON has no text for: `NaN` and `Infinity` (and `1e400`, which
    reads as infinity), and json5 reads hex integers of any length, which Python refuses to print
    in decimal beyond 4300 digits. Passed on, the first would make the whole GraphQL response
    invalid JSON and the second would fail it outright, for every job in it.
    """
    if _fits_json(value):
        return value
    return Malformed(
        field="params",
        reason="JobParams holds a number JSON cannot carry (NaN, an infinity, or an integer of "
        "more than 4300 digits).",
    )


def _fits_json(value: JsonValue) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, RecursionError):
        return False
    return True


def _decode_user_data(text: str | None) -> str | None:
    # The upstream writes "null" (a string) for a job submitted without UserData.
    if text is None or text in ("", "null"):
        return None
    return text


def _decode_result(
    text: str | None, output: OssObject | Malformed | None
) -> JobResult | Malformed | None:
    """`Result`: a JSON string of `{"Code", "Message", "Data"}`, whose Data is a JSON string too.

    None for a job without a Result yet (running). Data is decoded when it is a JSON string, taken
    as it is when already decoded, and kept as text when it is not JSON or holds a number JSON
    cannot carry (not an error: Data is free-form per algorithm). Files are `Data.result[].file`
    keys, placed in the bucket of the job's Output; a missing or odd `result` gives no files,
    entries without a `file` are skipped.
    """
    if text is None:
        return None
    try:
        decoded = json.loads(text)
    except RecursionError:
        return Malformed(field="result", reason="Result nests too deeply to decode.")
    except ValueError as exc:
        # json's messages give a position only, never an excerpt of the value.
        return Malformed(field="result", reason=f"Result is not JSON: {exc}.")
    if not isinstance(decoded, dict):
        return Malformed(
            field="result",
            reason=f"Result decodes to {_kind(decoded)}, expected an object with Code and Data.",
        )
    data = _decode_data(decoded.get("Data"))
    return JobResult(
        code=_optional_text(decoded.get("Code")),
        message=_optional_text(decoded.get("Message")),
        files=_result_files(data, output),
        data=data,
    )


def _decode_data(value: JsonValue) -> JsonValue:
    if not isinstance(value, str):
        return value if _fits_json(value) else _json_text(value)
    try:
        decoded: JsonValue = json.loads(value)
    except (ValueError, RecursionError):
        return value
    return decoded if _fits_json(decoded) else value


def _result_files(data: JsonValue, output: OssObject | Malformed | None) -> tuple[ResultFile, ...]:
    if not isinstance(data, dict):
        return ()
    entries = data.get("result")
    if not isinstance(entries, list):
        return ()
    files: list[ResultFile] = []
    for entry in entries:
        key = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(key, str) or not key:
            continue
        placed = None
        if isinstance(output, OssObject):
            placed = OssObject(
                bucket=output.bucket, endpoint=output.endpoint, key=key, region=output.region
            )
        files.append(ResultFile(key=key, object=placed))
    return tuple(files)


def _optional_text(value: JsonValue) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _json_text(value)


def _kind(value: JsonValue) -> str:
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "a list"
        case None:
            return "null"
        case _:
            return "an object"


def _shown(url: str) -> str:
    """`url` as error messages may show it: short, and without the query string of an http(s)
    URL (presigned URLs carry credentials there) or any user:password part."""
    shown = url
    if shown.lstrip()[:4].lower() == "http":
        shown = re.sub(r"//[^/?#@]*@", "//", shown.split("?", 1)[0].split("#", 1)[0], count=1)
    if len(shown) > _SHOWN_MAX:
        shown = shown[:_SHOWN_MAX] + "..."
    return repr(shown)
