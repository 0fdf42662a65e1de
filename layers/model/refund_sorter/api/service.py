"""What the API does, behind the predict handler's routes (which only translate HTTP to these calls)."""

from __future__ import annotations

import binascii
import re
import uuid
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from refund_sorter.api.schemas import DepartmentOut, PredictionPage, PredictionRequest
from refund_sorter.config import Settings, get_settings
from refund_sorter.days import parse_day
from refund_sorter.errors import (
    ConflictError,
    ErrorCode,
    ImageError,
    InvalidRequestError,
    NotFoundError,
    StorageError,
)
from refund_sorter.results import Result

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from refund_sorter.api.schemas import ReviewRequest
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.vision.sorter import Sorter

_SAFE_KEY = re.compile(r"^[^\x00-\x1f]{1,1024}$")

# Lambda's synchronous response limit is 6 MB; bigger exports are handed out as a presigned S3 link.
INLINE_EXPORT_BYTES = 5 * 1024 * 1024


class PredictionService:
    """The API's operations over one Sorter, ResultStore and PhotoBucket.

    The store and the bucket are made on first use: their boto3 clients cost ~100 ms each of a cold start,
    which /health never needs, and only s3_key predictions and large exports need the bucket.
    """

    def __init__(
        self,
        settings: Settings,
        sorter: Sorter,
        store: DynamoResultStore | None = None,
        bucket: PhotoBucket | None = None,
    ) -> None:
        self.settings = settings
        self.sorter = sorter
        self._store = store
        self._bucket = bucket

    @property
    def store(self) -> DynamoResultStore:
        if self._store is None:
            from refund_sorter.storage.dynamodb import DynamoResultStore

            self._store = DynamoResultStore(self.settings.table)
        return self._store

    @property
    def bucket(self) -> PhotoBucket:
        if self._bucket is None:
            from refund_sorter.storage.bucket import PhotoBucket

            self._bucket = PhotoBucket(self.settings)
        return self._bucket

    def predict(self, request: PredictionRequest) -> tuple[Result, bool]:
        """Classify what the request names and store it. Returns the Result and whether it is new."""
        from refund_sorter.sources.files import photo_from_bytes, photo_from_url

        new_id = uuid.uuid4().hex
        if request.url is not None:
            photo = photo_from_url(request.url, self.settings, photo_id=new_id)
        elif request.s3_key is not None:
            if not _SAFE_KEY.match(request.s3_key):
                raise InvalidRequestError("s3_key has control characters")
            stored = self.bucket.head(request.s3_key)
            existing = self.store.get(stored.result_id)
            if existing is not None:
                return existing, False
            photo = self.bucket.photo(stored)
        else:
            photo = photo_from_bytes(_decode_base64(request.image_base64 or "", self.settings), "upload", new_id)
        outcome = self.sorter.sort_one(photo)
        result = outcome.result
        assert result is not None  # sort_one raises rather than defer
        if not self.store.add(result):
            existing = self.store.get(result.id)
            return (existing or result), False
        if self.settings.bucket:  # the features, for training heads (refund_sorter.heads.embeddings)
            from refund_sorter.heads.embeddings import keep_one

            keep_one(self.bucket, result.id, outcome.embedding)
        return result, True

    def predict_once(
        self, request: PredictionRequest, idempotency_key: str, lambda_context: object | None = None
    ) -> tuple[Result, bool]:
        """:meth:`predict`, but a retry with the same ``Idempotency-Key`` gets the first answer back.

        Powertools' idempotency utility keeps the first response in its own table; the same key with a
        different body is refused rather than silently answered with another photo's result.
        """
        config, idempotent_predict = self._idempotent_predict
        if lambda_context is not None:
            # lets Powertools expire an in-progress record if this invocation times out
            config.register_lambda_context(lambda_context)  # type: ignore[arg-type]
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyValidationError,
        )

        try:
            replay = idempotent_predict(payload={"key": idempotency_key, "request": request.model_dump()})
        except IdempotencyValidationError as exc:
            raise InvalidRequestError(
                "this Idempotency-Key came with another body", ErrorCode.IDEMPOTENCY_KEY_REUSED
            ) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise ConflictError("a request with this Idempotency-Key is still running") from exc
        return Result.model_validate(replay["result"]), bool(replay["created"])

    @cached_property
    def _idempotent_predict(self) -> tuple[IdempotencyConfig, Callable[..., dict[str, Any]]]:
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        if not self.settings.idempotency_table:
            raise StorageError("no idempotency table configured (REFUND_SORTER_IDEMPOTENCY_TABLE)")
        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="request",
            expires_after_seconds=self.settings.idempotency_seconds,
        )
        persistence = DynamoDBPersistenceLayer(
            table_name=self.settings.idempotency_table, boto3_client=self.store.client
        )

        @idempotent_function(data_keyword_argument="payload", persistence_store=persistence, config=config)
        def predict(payload: dict[str, Any]) -> dict[str, Any]:
            result, created = self.predict(PredictionRequest.model_validate(payload["request"]))
            return {"result": result.model_dump(mode="json"), "created": created}

        return config, predict

    def get(self, result_id: str) -> Result:
        result = self.store.get(result_id) if len(result_id) <= 64 else None
        if result is None:
            raise NotFoundError(f"no prediction with id {result_id}")
        return result

    def list_day(self, day: str, limit: int, next_token: str | None) -> PredictionPage:
        day = parse_day(day)
        items, token = self.store.page_by_day(day, limit=limit, token=next_token)
        return PredictionPage(date=day, items=items, next_token=token)

    def review(self, result_id: str, request: ReviewRequest) -> Result:
        known = [d.id for d in self.sorter.departments()]  # the active head's, else the taxonomy's
        if request.category not in known:
            raise InvalidRequestError(f"unknown category {request.category!r}; one of: {', '.join(known)}")
        return self.store.review(result_id, request.category)

    def export(self, day: str) -> tuple[str, str | None]:
        """The day's CSV: its text when small, else ``("", presigned_url)`` to the stored export."""
        from refund_sorter.storage.export import csv_file

        day = parse_day(day)
        export = csv_file(self.store.by_day(day))
        with export.body:
            if export.size <= INLINE_EXPORT_BYTES:
                return export.body.read().decode("utf-8"), None
            key = f"{self.settings.exports_prefix}{day}.csv"
            self.bucket.put_export(key, export.body)
        return "", self.bucket.presigned_get(key)

    def departments(self) -> list[DepartmentOut]:
        return [DepartmentOut(id=d.id, name=d.name, description=d.description) for d in self.sorter.departments()]


def _decode_base64(text: str, settings: Settings) -> bytes:
    # A base64 string is 4/3 of the bytes: refuse an oversized one before decoding it.
    if len(text) > settings.max_image_bytes * 4 // 3 + 4:
        raise ImageError(ErrorCode.FILE_TOO_LARGE, f"the image is over the limit of {settings.max_image_bytes:,} bytes")
    try:
        # strict_mode refuses what b64decode(validate=True) refuses, without its extra regex pass (~6 ms / 3 MB)
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("image_base64 is not valid base64") from exc


@cache
def get_service() -> PredictionService:
    """The process-wide service; the model session itself is only created on the first classification."""
    from refund_sorter.vision.sorter import get_sorter

    return PredictionService(get_settings(), get_sorter())
