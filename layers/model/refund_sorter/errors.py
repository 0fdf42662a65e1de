"""Errors with stable codes.

Every refusal the product makes carries an :class:`ErrorCode` (stable, machine-readable: it lands in the
Result's ``error.code``, the CSV and the API's ``{"error": {"code", "message"}}``) and a message for people.
Callers catch :class:`RefundSorterError`; nothing from Pillow, urllib3 or onnxruntime escapes raw.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why something was refused: stable, machine-readable; the message next to it is for people."""

    # The photo itself
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT_IMAGE = "corrupt_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    DECOMPRESSION_BOMB = "decompression_bomb"
    FILE_TOO_LARGE = "file_too_large"
    PROCESSING_CRASHED = "processing_crashed"  # the photo killed the worker classifying it (nightly fan-out)
    # Getting the photo
    INVALID_URL = "invalid_url"
    BLOCKED_ADDRESS = "blocked_address"
    FETCH_TIMEOUT = "fetch_timeout"
    FETCH_FAILED = "fetch_failed"
    UPSTREAM_STATUS = "upstream_status"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    BAD_CONTENT_TYPE = "bad_content_type"
    NOT_FOUND = "not_found"
    # The request itself
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    REQUEST_IN_PROGRESS = "request_in_progress"
    UNKNOWN_HOST = "unknown_host"  # the local stack only: a Host header it does not listen on (DNS rebinding)
    # A person's decision (the review loop)
    REVIEW_CONFLICT = "review_conflict"  # the Result changed since the reviewer saw it: someone decided first
    NOT_REVIEWABLE = "not_reviewable"  # a failed Result: no prediction, nothing to decide on
    NOTHING_TO_UNDO = "nothing_to_undo"
    NOT_YOUR_DECISION = "not_your_decision"  # only the person who decided may take it back
    # Storage and the model: ours, not the client's
    STORAGE_ERROR = "storage_error"
    MODEL_ERROR = "model_error"
    INTERNAL_ERROR = "internal_error"  # a bug of ours: logged, never a stack trace to the client


class RefundSorterError(Exception):
    """Base of every error the product raises on purpose."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


class ImageError(RefundSorterError):
    """The bytes are not a photo we can classify."""


class FetchError(RefundSorterError):
    """The photo could not be fetched from where the client said it is."""


class NotFoundError(RefundSorterError):
    """A result, object or export that does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, message)


class StorageError(RefundSorterError):
    """DynamoDB or S3 failed in a way retries did not cure."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.STORAGE_ERROR, message)


class InvalidRequestError(RefundSorterError):
    """The client asked for something malformed (a bad date, an unknown department, a bad page token)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
        super().__init__(code, message)


class ConflictError(RefundSorterError):
    """The same request is already being served (an Idempotency-Key still in flight)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.REQUEST_IN_PROGRESS, message)


class ReviewError(RefundSorterError):
    """A decision that cannot be recorded as asked: someone decided first, a failed Result, an undo of nothing or
    of someone else's decision. Nothing was written."""
