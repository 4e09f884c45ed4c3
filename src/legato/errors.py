"""One error hierarchy: every error knows its HTTP status and its machine-readable code.

Routes never build error bodies; the API turns any `LegatoError` into SPEC §3's shape.
"""

from __future__ import annotations

from typing import Any


class LegatoError(Exception):
    """Base of every error Legato raises on purpose."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details if details is not None else {}


class BadRequest(LegatoError):
    status = 400
    code = "BAD_REQUEST"


class Unauthorized(LegatoError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(LegatoError):
    status = 403
    code = "FORBIDDEN"


class NotFound(LegatoError):
    status = 404
    code = "NOT_FOUND"


class Conflict(LegatoError):
    status = 409
    code = "CONFLICT"


class PreconditionFailed(LegatoError):
    status = 412
    code = "PRECONDITION_FAILED"


class ValidationFailed(LegatoError):
    status = 422
    code = "VALIDATION_FAILED"


class Unavailable(LegatoError):
    status = 503
    code = "UNAVAILABLE"


class ServiceNotFound(NotFound):
    code = "SERVICE_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"service not found: {name}", details={"name": name})


class DeploymentNotFound(NotFound):
    code = "DEPLOYMENT_NOT_FOUND"

    def __init__(self, deployment_id: str) -> None:
        super().__init__(f"deployment not found: {deployment_id}", details={"id": deployment_id})


class DeploymentInProgress(Conflict):
    code = "DEPLOYMENT_IN_PROGRESS"

    def __init__(self, deployment_id: str, number: int, status: str) -> None:
        super().__init__(
            f"deployment #{number} ({deployment_id}) is {status}; wait for it, or supersede it "
            "with ?supersede=true",
            details={"deployment_id": deployment_id, "number": number, "status": status},
        )


class DeploymentNotActive(Conflict):
    code = "DEPLOYMENT_NOT_ACTIVE"

    def __init__(self, deployment_id: str, number: int, status: str) -> None:
        super().__init__(f"deployment #{number} is {status}, not in progress",
                         details={"deployment_id": deployment_id, "status": status})


class RuntimeFailure(LegatoError):
    """The container runtime refused or failed an operation."""

    status = 502
    code = "RUNTIME_ERROR"


class ImageNotFound(RuntimeFailure):
    status = 422
    code = "IMAGE_NOT_FOUND"

    def __init__(self, image: str, reason: str = "") -> None:
        message = f"image not found: {image}" + (f" ({reason})" if reason else "")
        super().__init__(message, details={"image": image})


class EdgeFailure(LegatoError):
    """HAProxy refused a configuration or a runtime command."""

    status = 502
    code = "EDGE_ERROR"
