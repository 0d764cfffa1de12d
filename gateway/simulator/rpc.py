"""The RPC endpoint at `/`: one call, from raw request to MPS-shaped answer.

Parameters travel in the query string, a form body (`application/x-www-form-urlencoded`), or both,
as the official SDK (POST, query only), aliyunsdkcore (GET) and older Tea SDKs (POST, form body)
send them (docs/upstream.md section 3.5). A request signed with V3 (`Authorization: ACS3-...`)
names its action and version in `x-acs-action` / `x-acs-version`; any other request is treated as
V1.

The steps, in order; the first that fails answers:
1. body format: V1 answers XML unless `Format=JSON` (any case), as MPS does; V3 answers JSON unless
   `Format=XML`;
2. HTTP method (GET or POST) and action (QueryIProductionJob, SubmitIProductionJob at 2014-06-18);
3. authentication (`auth.Authenticator`);
4. the action's QPS limit, which counts the call (`window.ActionMeter`);
5. faults (`faults`), then the action itself (`actions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from gateway.model import JsonValue
from gateway.mps.signing import FORM_CONTENT_TYPE
from gateway.simulator import errors
from gateway.simulator.actions import query_job, submit_job
from gateway.simulator.errors import ApiError
from gateway.simulator.faults import (
    DroppedResponse,
    Outcome,
    add_latency,
    choose_outcome,
    garble,
)
from gateway.simulator.responses import (
    BodyFormat,
    error_response,
    new_request_id,
    rpc_response,
    success_response,
)
from gateway.simulator.state import (
    API_VERSION,
    QUERY_ACTION,
    SUBMIT_ACTION,
    Simulator,
)

logger = logging.getLogger(__name__)

Handler = Callable[[Simulator, Mapping[str, str]], dict[str, JsonValue]]
HANDLERS: dict[str, Handler] = {QUERY_ACTION: query_job, SUBMIT_ACTION: submit_job}


async def rpc_endpoint(request: Request) -> Response:
    simulator: Simulator = request.app.state.simulator
    request_id = new_request_id()
    body = await request.body()
    params = _params(request, body)
    is_v3 = request.headers.get("authorization", "").lstrip().startswith("ACS3-")
    body_format = BodyFormat.JSON if is_v3 else BodyFormat.XML
    try:
        body_format = _body_format(params, is_v3)
        action = _action(request, params, is_v3)
        now = simulator.clock()
        if is_v3:
            query = dict(parse_qsl(_raw_query(request), keep_blank_values=True))
            caller = simulator.auth.verify_v3(
                request.method, request.url.path, query, request.headers, body, now
            )
        else:
            caller = simulator.auth.verify_v1(request.method, params, now)
        simulator.signatures[caller.signature_version] += 1
        if not simulator.meters[action].admit(now, simulator.qps):
            raise errors.throttled()
    except ApiError as error:
        logger.debug("Simulator refused a call: %s", error.code)
        return error_response(error, request_id, body_format)

    outcome = choose_outcome(simulator.faults, simulator.rng)
    await add_latency(simulator.faults, simulator.rng, simulator.sleep)
    try:
        if outcome is Outcome.ERROR:
            raise errors.service_unavailable()
        fields = {"RequestId": request_id, **HANDLERS[action](simulator, params)}
        response = success_response(action, fields, body_format)
    except ApiError as error:
        response = error_response(error, request_id, body_format)
    except Exception:
        # A simulator bug still answers in the upstream's shape, as the cloud's own bugs do.
        logger.exception("Simulator failed on %s (RequestId %s)", action, request_id)
        response = error_response(errors.internal_error(), request_id, body_format)
    if outcome is Outcome.MALFORMED:
        # Only the body is garbled: the head, RequestId header included, arrives as sent.
        return rpc_response(
            response.status_code,
            garble(bytes(response.body)),
            body_format,
            request_id=request_id,
        )
    if outcome is Outcome.DROP:
        return DroppedResponse(response)
    return response


def _raw_query(request: Request) -> str:
    raw: bytes = request.scope.get("query_string", b"")
    return raw.decode("utf-8", errors="replace")


def _params(request: Request, body: bytes) -> dict[str, str]:
    """Query string and form body parameters together (the body wins a name in both)."""
    params = dict(parse_qsl(_raw_query(request), keep_blank_values=True))
    if request.headers.get("content-type", "").startswith(FORM_CONTENT_TYPE):
        params.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return params


def _body_format(params: Mapping[str, str], is_v3: bool) -> BodyFormat:
    requested = params.get("Format", "").upper()
    if is_v3:
        return BodyFormat.XML if requested == "XML" else BodyFormat.JSON
    if requested in ("", "XML"):
        return BodyFormat.XML  # the MPS default (docs/upstream.md section 3.1)
    if requested == "JSON":
        return BodyFormat.JSON
    raise errors.invalid_format()


def _action(request: Request, params: Mapping[str, str], is_v3: bool) -> str:
    if request.method not in ("GET", "POST"):
        raise errors.unsupported_method()
    if is_v3:
        action = request.headers.get("x-acs-action", "")
        version = request.headers.get("x-acs-version", "")
    else:
        action = params.get("Action", "")
        version = params.get("Version", "")
    if not action:
        raise errors.missing_parameter("Action")
    if not version:
        raise errors.missing_parameter("Version")
    if action not in HANDLERS or version != API_VERSION:
        raise errors.action_not_found()
    return action
