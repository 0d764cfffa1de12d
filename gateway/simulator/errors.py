"""The upstream's own error codes, as the simulator answers them.

These are MPS / Alibaba Cloud gateway codes (docs/upstream.md section 4.2), not the gateway's
`GatewayError` codes: the simulator speaks the upstream's language so that the gateway's error
mapping is exercised against what the cloud really says. Messages are the documented verbatim texts
wherever that section quotes one.

`ApiError` is raised anywhere in the request pipeline and rendered once, by `responses.error_body`,
in the JSON or XML shape the caller asked for.
"""

from __future__ import annotations


class ApiError(Exception):
    """An upstream error answer: a code, its HTTP status and a message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def missing_parameter(name: str) -> ApiError:
    # The API gateway's `Missing{Name}` family (docs/upstream.md section 4.2), as in ECS's
    # well-known `MissingRegionId` / "RegionId is mandatory for this action.": one code per missing
    # name lets a caller see at once which parameter it forgot.
    return ApiError(f"Missing{name}", f"{name} is mandatory for this action.")


def invalid_parameter(name: str) -> ApiError:
    # MPS wording (doc 29254): `The specified parameter "%s" is invalid.`
    return ApiError("InvalidParameter", f'The specified parameter "{name}" is invalid.')


def invalid_format() -> ApiError:
    return ApiError("InvalidParameter.Format", "Specified parameter format is not valid.")


def action_not_found() -> ApiError:
    return ApiError(
        "InvalidAction.NotFound",
        "Specified api is not found, please check your url and method.",
        404,
    )


def unsupported_method() -> ApiError:
    return ApiError(
        "UnsupportedHTTPMethod", "The specified HTTP method is not supported by this API."
    )


def access_key_not_found() -> ApiError:
    # docs/upstream.md section 4.2 has 400 (doc 434846) and 404 (doc 51132, ask/278265) for this
    # code; the SDKs' printed form "HTTP Status: 404 Error:InvalidAccessKeyId.NotFound" is the one
    # seen in the wild.
    return ApiError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)


def signature_does_not_match(server_string_to_sign: str) -> ApiError:
    # The server's StringToSign after `server string to sign is:` is what lets a client (and
    # aliyunsdkcore) tell a wrong secret from a wrong canonicalisation.
    return ApiError(
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation. "
        f"server string to sign is:{server_string_to_sign}",
    )


def content_hash_does_not_match() -> ApiError:
    return ApiError(
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation. The x-acs-content-sha256 "
        "header is not the hex SHA-256 of the request body.",
    )


def incomplete_signature(detail: str) -> ApiError:
    return ApiError(
        "IncompleteSignature",
        f"The request signature does not conform to Aliyun standards. {detail}",
    )


def invalid_signature_method() -> ApiError:
    return ApiError("InvalidSignatureMethod", "Specified signature method is not valid.")


def timestamp_expired() -> ApiError:
    return ApiError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")


def timestamp_format() -> ApiError:
    return ApiError(
        "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
    )


def nonce_used() -> ApiError:
    return ApiError("SignatureNonceUsed", "Specified signature nonce was used already.")


def throttled() -> ApiError:
    return ApiError("Throttling.User", "Request was denied due to user flow control.")


def internal_error() -> ApiError:
    return ApiError(
        "InternalError",
        "The request processing has failed due to some unknown error, exception or failure.",
        500,
    )


def service_unavailable() -> ApiError:
    return ApiError(
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
        503,
    )
