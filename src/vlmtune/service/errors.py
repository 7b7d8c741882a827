"""The control plane's errors, in the shape botocore turns into `client.exceptions.<Code>`.

botocore's rest-json parser reads the error code from the `x-amzn-ErrorType` header (or `code` in the body)
and the message from `message`; the HTTP status follows the service model (all client errors are 400
except AccessDenied 403, ResourceNotFound 404 and Throttling 429).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from vlmtune.errors import VlmtuneError


class ServiceError(VlmtuneError):
    """A request the control plane refuses; `code` is the exception name boto3 raises."""

    code = "ValidationException"
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"message": self.message}, self.status, headers={"x-amzn-ErrorType": self.code})


class ValidationError(ServiceError):
    code, status = "ValidationException", 400


class ConflictError(ServiceError):
    code, status = "ConflictException", 400


class NotFoundError(ServiceError):
    code, status = "ResourceNotFoundException", 404


class QuotaError(ServiceError):
    code, status = "ServiceQuotaExceededException", 400


class TooManyTagsError(ServiceError):
    code, status = "TooManyTagsException", 400


class AccessDeniedError(ServiceError):
    code, status = "AccessDeniedException", 403


class InternalError(ServiceError):
    code, status = "InternalServerException", 500
