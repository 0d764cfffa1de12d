"""Answers the HTTP layer gives by itself, before GraphQL runs or instead of it.

Each is a GraphQL response that holds only errors,
`{"errors": [{"message": <a sentence>, "extensions": {"code": <code>, ..., "requestId": <id>}}]}`
(the id of the request being served, when there is one), so that a client reads every failure
the same way. Their codes are plain constants: nothing raises them as a `GatewayError`; a view
or middleware raises an `HttpRefusal` (or answers an `ErrorResponse`) instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cross_web import HTTPException
from starlette.responses import Response

from gateway.observe.requests import current_request_id

#: 400: a body, parameter or encoding the gateway cannot read as a GraphQL request.
BAD_REQUEST = "BAD_REQUEST"
#: 404: GraphiQL asked for while it is turned off, or a GraphiQL file that does not exist.
NOT_FOUND = "NOT_FOUND"
#: 400: a CORS preflight from an origin, for a method or with headers the gateway does not allow.
CORS_PREFLIGHT_REFUSED = "CORS_PREFLIGHT_REFUSED"
#: 405: a method other than GET and POST on /graphql, or a mutation over GET.
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
#: 408: a request body that did not arrive within GATEWAY_BODY_TIMEOUT.
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
#: 413: a request body over GATEWAY_MAX_BODY_BYTES.
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
#: 415: a POST body that is not `application/json` (UTF-8).
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
#: 400: a subscription over plain HTTP, which can answer one result only.
SUBSCRIPTION_TRANSPORT_REQUIRED = "SUBSCRIPTION_TRANSPORT_REQUIRED"

#: The code of each status Strawberry's view refuses a request with.
CODE_OF_STATUS = {400: BAD_REQUEST, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}


class ErrorResponse(Response):
    """An HTTP error answered as a GraphQL response with one coded error."""

    media_type = "application/json"

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str,
        *,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        **extensions: object,
    ) -> None:
        request_id = current_request_id()
        if request_id is not None:
            extensions["requestId"] = request_id
        error = {"message": message, "extensions": {"code": code, **extensions}}
        super().__init__(
            json.dumps({"errors": [error]}).encode(),
            status_code=status_code,
            headers=headers,
            media_type=media_type,
        )


class HttpRefusal(HTTPException):
    """A request the view refuses before (or instead of) running it: raised, the view answers
    it as an `ErrorResponse` with `code` (and `headers`, such as `Allow`)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.headers = dict(headers or {})

    def response(self, media_type: str | None = None) -> ErrorResponse:
        return ErrorResponse(
            self.status_code, self.reason, self.code, headers=self.headers, media_type=media_type
        )
