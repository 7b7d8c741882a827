"""The API key check: `Authorization: Bearer KEY`, or for Converse routes an AWS SigV4 signature by KEY.

AWS clients cannot send a bearer token without extra setup, but they always sign requests with an access
key id, so Converse routes accept the key as the access key id. Only the id is compared: the server does
not know a secret to verify the signature with, so this is a shared-key check, not AWS authentication.
"""

from __future__ import annotations

import hmac
import re

from vlmtune.serving import BadRequest

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def sigv4_access_key(authorization: str) -> str | None:
    """The access key id of an `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...` header."""
    if not authorization.startswith("AWS4-HMAC-SHA256"):
        return None
    match = _CREDENTIAL.search(authorization)
    return match.group(1) if match else None


def check_key(authorization: str | None, api_key: str | None, allow_sigv4: bool) -> None:
    """Raise a 401 BadRequest unless the header carries `api_key`; no key configured means open access."""
    if api_key is None:
        return
    header = authorization or ""
    presented = bearer_token(header) or (sigv4_access_key(header) if allow_sigv4 else None)
    if presented is None:
        how = "'Authorization: Bearer KEY' or an AWS signature with KEY as access key id" if allow_sigv4 else "'Authorization: Bearer KEY'"
        raise BadRequest(f"missing API key: send {how}", 401)
    if not hmac.compare_digest(presented.encode(), api_key.encode()):
        raise BadRequest("invalid API key", 401)
