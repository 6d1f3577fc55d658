"""ClearML API errors with the server's real codes, subcodes and message shapes.

The server builds a message as ``<default text>[ (<extra>)][: key=value, ...]`` and returns the
keyword arguments as ``error_data`` (apiserver/apierrors/base.py, codes in errors.conf). Clients
branch on (code, subcode), so the simulator raises the same pairs. Raised by state and the
endpoint handlers; the server turns them into the response ``meta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An error the server reports in ``meta`` with an HTTP status equal to ``code``."""

    def __init__(self, code: int, subcode: int, msg: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.subcode = subcode
        self.msg = msg
        self.data: dict[str, Any] = dict(data or {})


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class ErrorKind:
    """One entry of errors.conf; calling it builds the error the way the server does."""

    def __init__(self, code: int, subcode: int, text: str) -> None:
        self.code = code
        self.subcode = subcode
        self.text = text

    def __call__(self, extra: str | None = None, **data: Any) -> ApiError:
        msg = self.text
        if extra:
            msg += f" ({extra})"
        if data:
            msg += ": " + ", ".join(f"{k}={_format_value(v)}" for k, v in data.items())
        return ApiError(self.code, self.subcode, msg, {k: _jsonable(v) for k, v in data.items()})


# 400 bad_request
MISSING_REQUIRED_FIELDS = ErrorKind(400, 11, "Missing required fields")
VALIDATION_ERROR = ErrorKind(400, 12, "Validation error")
FIELDS_VALUE_ERROR = ErrorKind(400, 16, "Invalid value for fields")
INVALID_REGEX = ErrorKind(400, 21, "Malformed regular expression")
INVALID_TASK_ID = ErrorKind(400, 101, "Invalid task id")
INVALID_TASK_STATUS = ErrorKind(400, 110, "Invalid task status")
FAILED_CHANGING_TASK_STATUS = ErrorKind(400, 121, "Failed changing task status. probably someone changed it before you")
TASK_CANNOT_BE_DELETED = ErrorKind(400, 123, "Task cannot be deleted")
INVALID_MODEL_ID = ErrorKind(400, 201, "Invalid model id")
INVALID_PROJECT_ID = ErrorKind(400, 401, "Invalid project id")
INVALID_PROJECT_NAME = ErrorKind(400, 407, "Invalid project name")
INVALID_QUEUE_ID = ErrorKind(400, 701, "Invalid queue id")
QUEUE_NOT_EMPTY = ErrorKind(400, 702, "Queue is not empty")
INVALID_QUEUE_OR_TASK_NOT_QUEUED = ErrorKind(400, 703, "Invalid queue id or task not in queue")
TASK_ALREADY_QUEUED = ErrorKind(400, 706, "Failed adding task to queue since task is already queued")
NO_DEFAULT_QUEUE = ErrorKind(400, 707, "No queue is tagged as the default queue for this company")
DATA_VALIDATION_ERROR = ErrorKind(400, 800, "Data validation error")
EXPECTED_UNIQUE_DATA = ErrorKind(
    400, 801, "Value combination already exists (unique field already contains this value)"
)
WORKER_REGISTRATION_FAILED = ErrorKind(400, 1002, "Worker registration failed")
WORKER_NOT_REGISTERED = ErrorKind(400, 1004, "Worker is not registered")
INVALID_SCROLL_ID = ErrorKind(400, 1104, "Invalid scroll id")

# 401 unauthorized
BAD_AUTH_TYPE = ErrorKind(401, 10, "Unauthorized (bad authentication header type)")
NO_CREDENTIALS = ErrorKind(401, 20, "Unauthorized (missing credentials)")
BAD_CREDENTIALS = ErrorKind(401, 21, "Unauthorized (malformed credentials)")
INVALID_CREDENTIALS = ErrorKind(401, 22, "Unauthorized (invalid credentials)")
INVALID_TOKEN = ErrorKind(401, 30, "Invalid token")

# 500 server_error
GENERAL_ERROR = ErrorKind(500, 0, "General server error")
INTERNAL_ERROR = ErrorKind(500, 1, "Internal server error")


def required_property(key: str) -> ApiError:
    """What the server's JSON-schema check answers for a missing required field."""
    return VALIDATION_ERROR(message=f"'{key}' is a required property", path=[])


def endpoint_not_found(name: str, version: str) -> ApiError:
    """The router's own 404 (service_repo.py), not an errors.conf entry."""
    return ApiError(404, 0, f"Unable to find endpoint for name {name} and version {version}")
