"""JSON and XML bodies, the way the MPS RPC API writes them.

- Success: a flat object; in XML the root element is the action name + `Response`
  (`<QueryIProductionJobResponse>`), one child per field, in the same order as the JSON keys.
- Error: `{"RequestId", "HostId", "Code", "Message", "Recommend"}`; in XML under `<Error>`.
- Content types are exactly `application/json;charset=utf-8` and `text/xml;charset=utf-8`: the
  official SDK parses an XML error only when the content type is that exact string.
- Every answer carries a fresh RequestId (upper-case UUID), in the body and in the
  `x-acs-request-id` header, as the cloud does.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping
from urllib.parse import quote
from xml.sax.saxutils import escape

from starlette.responses import Response

from gateway.model import JsonValue
from gateway.simulator.errors import ApiError

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
XML_CONTENT_TYPE = "text/xml;charset=utf-8"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
#: What the cloud puts in an error's HostId: the product's endpoint.
HOST_ID = "mts.aliyuncs.com"


class BodyFormat(enum.Enum):
    JSON = "JSON"
    XML = "XML"

    @property
    def content_type(self) -> str:
        return JSON_CONTENT_TYPE if self is BodyFormat.JSON else XML_CONTENT_TYPE


def new_request_id() -> str:
    """A RequestId in the cloud's form, e.g. `D127C68E-F1A1-4CE5-A874-8FF724881A12`."""
    return str(uuid.uuid4()).upper()


def recommend_url(code: str) -> str:
    return f"https://next.api.aliyun.com/troubleshoot?q={quote(code, safe='')}&product=Mts"


def error_fields(error: ApiError, request_id: str) -> dict[str, JsonValue]:
    return {
        "RequestId": request_id,
        "HostId": HOST_ID,
        "Code": error.code,
        "Message": error.message,
        "Recommend": recommend_url(error.code),
    }


def encode_body(root: str, fields: Mapping[str, JsonValue], body_format: BodyFormat) -> bytes:
    """The bytes of a body: a JSON object, or an XML document whose root element is `root`."""
    if body_format is BodyFormat.JSON:
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    return (XML_DECLARATION + _xml_element(root, dict(fields))).encode()


def success_response(
    action: str, fields: Mapping[str, JsonValue], body_format: BodyFormat
) -> Response:
    """HTTP 200 with `fields` (which should hold the RequestId) as the action's response body."""
    request_id = fields.get("RequestId")
    body = encode_body(f"{action}Response", fields, body_format)
    return rpc_response(
        200, body, body_format, request_id=request_id if isinstance(request_id, str) else None
    )


def error_response(error: ApiError, request_id: str, body_format: BodyFormat) -> Response:
    body = encode_body("Error", error_fields(error, request_id), body_format)
    return rpc_response(error.status, body, body_format, request_id=request_id)


def rpc_response(
    status: int, body: bytes, body_format: BodyFormat, *, request_id: str | None = None
) -> Response:
    headers = {"content-type": body_format.content_type}
    if request_id:
        headers["x-acs-request-id"] = request_id
    return Response(body, status_code=status, headers=headers)


def _xml_element(name: str, value: JsonValue) -> str:
    # The simulator's own answers are flat strings; nested values, which only a test-planted job
    # can hold, become nested elements (and repeated elements for lists).
    if value is None:
        return f"<{name}/>"
    if isinstance(value, dict):
        inner = "".join(_xml_element(key, item) for key, item in value.items())
        return f"<{name}>{inner}</{name}>"
    if isinstance(value, list):
        return "".join(_xml_element(name, item) for item in value)
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"
