"""A `submitJob` input, checked before any upstream call, as the SubmitIProductionJob request it
becomes (`Submission`).

Every check raises `InvalidArgument` naming the field (`input.functionName`, ...) with a
sentence of what was expected. What is checked (docs/upstream.md section 2.1 says why):

- `functionName`: 1 to 64 letters and digits, starting with a letter (any name: the upstream may
  run algorithms the documentation does not list yet);
- `input` and `output`: `oss://` URLs of a bucket in the region the gateway serves, as
  `oss://<bucket>.oss-<region>.aliyuncs.com/<key>` or `oss://<bucket>/<key>`, sent in the first
  form; output placeholders (`{source}`, `{timestamp}`, `{sequenceId}`, ...) kept verbatim;
- `params`: a JSON object, at most `MAX_PARAMS_BYTES` once written;
- `userData`: so that the gateway's envelope around it (`gateway.callers.envelope`) fits the
  upstream's `MAX_USER_DATA_BYTES`;
- `notifyUrl`: an MNS queue or topic, `mns://<account>.mns.<region>.aliyuncs.com/queues/<name>`;
- `pipelineId`, `modelId`, `scheduleParams`: bounded, of the characters such values have.

The `fingerprint` of a submission is a digest of everything sent upstream: two submissions with
the same fingerprint would create the same job.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Final

from gateway.callers.envelope import wrap
from gateway.errors import InvalidArgument
from gateway.model import JsonValue
from gateway.mps.client import SubmitJobRequest
from gateway.mps.decode import OssUrlError, parse_oss_url

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_PARAMS_BYTES",
    "MAX_URL_LENGTH",
    "MAX_USER_DATA_BYTES",
    "Submission",
    "SubmitJobSpec",
    "check_idempotency_key",
    "check_submission",
]

#: UserData the upstream keeps, in bytes of UTF-8: MPS's documented bound on UserData (1,024
#: bytes for its other job APIs; SubmitIProductionJob documents none, so the same one is assumed).
MAX_USER_DATA_BYTES: Final = 1024
#: JobParams, in bytes of UTF-8 once written as compact JSON (the gateway's own bound: the
#: documented parameters of every algorithm fit in a few hundred).
MAX_PARAMS_BYTES: Final = 8192
#: An input or output URL, in characters (an OSS object key is at most 1,023 bytes).
MAX_URL_LENGTH: Final = 1024
MAX_NOTIFY_URL_LENGTH: Final = 512
MAX_SCHEDULE_PARAMS_LENGTH: Final = 1024
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255

_FUNCTION_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_PIPELINE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MODEL_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MNS_URL: Final = re.compile(
    r"mns://[0-9]{1,32}\.mns\.[a-z0-9]+(?:-[a-z0-9]+)*(?:-internal)?\.aliyuncs\.com"
    r"/(?:queues|topics)/[A-Za-z0-9][A-Za-z0-9-]{0,255}"
)
# Printable ASCII without spaces: what fits an HTTP header and a log line unescaped.
_IDEMPOTENCY_KEY: Final = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class SubmitJobSpec:
    """A `submitJob` input as the client gave it (None: not given)."""

    function_name: str
    input: str
    output: str
    params: JsonValue = None
    user_data: str | None = None
    pipeline_id: str | None = None
    notify_url: str | None = None
    model_id: str | None = None
    schedule_params: str | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """A checked submission: the request to send, and its fingerprint."""

    request: SubmitJobRequest
    fingerprint: str
    #: The caller's own user data (what the job shows), and the tenant it is submitted for.
    user_data: str | None
    tenant: str | None


def check_submission(spec: SubmitJobSpec, *, tenant: str | None, region: str) -> Submission:
    """The submission `spec` asks for, on behalf of `tenant`, to the MPS of `region`; raises
    `InvalidArgument` for the first field that is wrong."""
    if _FUNCTION_NAME.fullmatch(spec.function_name) is None:
        raise InvalidArgument(
            "input.functionName",
            "to be 1 to 64 letters and digits starting with a letter (such as ImageCartoonize)",
            spec.function_name,
        )
    job_params = None
    if spec.params is not None:
        if not isinstance(spec.params, dict):
            raise InvalidArgument("input.params", "to be a JSON object", spec.params)
        job_params = json.dumps(spec.params, ensure_ascii=False, separators=(",", ":"))
        size = len(job_params.encode())
        if size > MAX_PARAMS_BYTES:
            raise InvalidArgument(
                "input.params",
                f"to take at most {MAX_PARAMS_BYTES} bytes as JSON",
                f"{size} bytes",
            )
    user_data = wrap(tenant, spec.user_data)
    if user_data is not None:
        size = len(user_data.encode("utf-8", errors="surrogatepass"))
        if size > MAX_USER_DATA_BYTES:
            raise InvalidArgument(
                "input.userData",
                f"to take at most {MAX_USER_DATA_BYTES} bytes as UTF-8 together with the "
                "gateway's record of the tenant",
                f"{size} bytes",
            )
    request = SubmitJobRequest(
        function_name=spec.function_name,
        input=_oss_url("input.input", spec.input, region),
        output=_oss_url("input.output", spec.output, region),
        job_params=job_params,
        user_data=user_data,
        pipeline_id=_matching("input.pipelineId", spec.pipeline_id, _PIPELINE_ID, _ID_TEXT),
        model_id=_matching("input.modelId", spec.model_id, _MODEL_ID, _MODEL_TEXT),
        notify_url=_matching("input.notifyUrl", spec.notify_url, _MNS_URL, _MNS_TEXT),
        schedule_params=_schedule_params(spec.schedule_params),
    )
    canonical = json.dumps(request.params(), sort_keys=True, ensure_ascii=False)
    fingerprint = hashlib.sha256(canonical.encode("utf-8", errors="surrogatepass")).hexdigest()
    return Submission(
        request=request, fingerprint=fingerprint, user_data=spec.user_data, tenant=tenant
    )


def check_idempotency_key(argument: str, key: str) -> str:
    """`key` when it is 1 to 255 printable ASCII characters without spaces."""
    if _IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise InvalidArgument(
            argument,
            f"to be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters without spaces "
            "(a UUID, say)",
            key,
        )
    return key


_ID_TEXT: Final = "to be 1 to 64 letters, digits, '_' and '-'"
_MODEL_TEXT: Final = "to be 1 to 64 letters, digits, '.', '_' and '-'"
_MNS_TEXT: Final = (
    "to be an MNS queue or topic, mns://<account id>.mns.<region>.aliyuncs.com/queues/<name>"
)


def _matching(
    argument: str, value: str | None, pattern: re.Pattern[str], expected: str
) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_NOTIFY_URL_LENGTH or pattern.fullmatch(value) is None:
        raise InvalidArgument(argument, expected, value)
    return value


def _schedule_params(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_SCHEDULE_PARAMS_LENGTH or not value.isprintable():
        raise InvalidArgument(
            "input.scheduleParams",
            f"to be at most {MAX_SCHEDULE_PARAMS_LENGTH} printable characters",
            value,
        )
    return value


def _oss_url(argument: str, url: str, region: str) -> str:
    """`url` as MPS takes it, `oss://<bucket>.oss-<region>.aliyuncs.com/<key>`, when it names
    an object of `region` (the key byte for byte, placeholders included)."""
    expected = (
        f"to be an oss:// URL of a bucket in {region}, such as "
        f"oss://<bucket>.oss-{region}.aliyuncs.com/<key>"
    )
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(argument, f"{expected}, of at most {MAX_URL_LENGTH} characters", url)
    if not url.startswith("oss://"):
        raise InvalidArgument(argument, expected, url)
    try:
        obj = parse_oss_url(url, region=region)
    except OssUrlError:
        raise InvalidArgument(argument, expected, url) from None
    if obj.endpoint != f"oss-{region}.aliyuncs.com":
        raise InvalidArgument(argument, expected, url)
    return obj.oss_url
