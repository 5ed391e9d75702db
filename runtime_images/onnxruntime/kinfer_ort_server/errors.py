"""The server's one error type: an HTTP status, a gRPC code and a metrics `reason` per failure."""

from __future__ import annotations

import grpc


class ServerError(Exception):
    """A request the server refuses or could not serve; `reason` labels the failure metric."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServerError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "bad_request"


class ModelNotFound(ServerError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    reason = "model_not_found"


class ModelNotReady(ServerError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "model_not_ready"


class PayloadTooLarge(ServerError):
    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "payload_too_large"


class LoadFailed(ServerError):
    """A repository load that failed; the previously loaded model keeps serving."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "load_failed"
