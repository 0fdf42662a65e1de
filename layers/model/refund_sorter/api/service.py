"""What the API does, behind the predict handler's routes (which only translate HTTP to these calls)."""

from __future__ import annotations

import binascii
import re
import uuid
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from refund_sorter.api.schemas import DepartmentOut, PhotoLink, PredictionPage, PredictionRequest, QueueCounts
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
from refund_sorter.results import Result, utc_now

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from refund_sorter.api.schemas import ReviewRequest
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.summaries import NightSummary
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
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.sorter = sorter
        self._store = store
        self._bucket = bucket
        self.clock = clock

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
        result, thumbnail = self.sorter.classify_one_with_thumbnail(photo)
        if thumbnail is not None:  # before the Result: a reviewer who sees it can see its photo
            self.bucket.put_thumbnail(result.id, thumbnail)
        if not self.store.add(result):
            existing = self.store.get(result.id)
            return (existing or result), False
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

    # ------------------------------------------------------------------ the review loop

    def list_predictions(
        self,
        *,
        date: str | None,
        status: str | None,
        department: str | None,
        limit: int,
        next_token: str | None,
        counts: bool = True,
    ) -> PredictionPage:
        """A day's Results (``date``), or the review queue (``status=needs_review``, ``date`` optional)."""
        if status is None:
            if date is None:
                raise InvalidRequestError("give date=YYYY-MM-DD, or status=needs_review for the review queue")
            if department is not None:
                raise InvalidRequestError("department filters the review queue: add status=needs_review")
            return self.list_day(date, limit, next_token)
        return self.queue(date=date, department=department, limit=limit, next_token=next_token, counts=counts)

    def queue(
        self,
        *,
        date: str | None = None,
        department: str | None = None,
        limit: int = 50,
        next_token: str | None = None,
        counts: bool = True,
    ) -> PredictionPage:
        """The ``needs_review`` queue, oldest first across nights; the first page also says how much is left
        (unless ``counts`` is false: the page asks for them once its first photo is on screen)."""
        day = parse_day(date) if date is not None else None
        if department is not None:
            self._check_department(department, "department")
        items, token = self.store.page_queue(limit=limit, token=next_token, day=day, department=department)
        left = None
        if next_token is None and counts:
            counted = day or self.clock().date().isoformat()
            left = QueueCounts(
                date=counted,
                left_today=self.store.count_queue(day=counted, department=department),
                done_today=self.store.count_decided(counted),
                left=self.store.count_queue(department=department),
            )
        return PredictionPage(
            date=day, status="needs_review", department=department, items=items, next_token=token, counts=left
        )

    def review(self, result_id: str, request: ReviewRequest, by: str = "local") -> Result:
        """Record a person's decision (a conditional write: see :mod:`refund_sorter.reviews`)."""
        self._check_department(request.category, "category")
        self.get(result_id)  # a clear 404 for ids that cannot exist
        return self.store.review(result_id, request.category, by, revision=request.revision)

    def undo_review(self, result_id: str, by: str = "local", revision: int | None = None) -> Result:
        """Take back the decision in force; only the person who made it may."""
        self.get(result_id)
        return self.store.undo_review(result_id, by, revision=revision)

    def summary(self, day: str) -> NightSummary:
        from refund_sorter.summaries import summarize

        day = parse_day(day)
        return summarize(day, self.store.by_day(day))

    def photo_link(self, result_id: str, size: str = "thumbnail") -> PhotoLink:
        """A short-lived link to the photo a person should look at: its thumbnail, or ``full`` the original
        wherever it is now. Without a thumbnail, the original; a photo kept only as a thumbnail (sent to the API
        before originals were kept) gives the thumbnail for both."""
        result = self.get(result_id)
        thumbnail = self.bucket.thumbnail_key(result.id)
        candidates = [thumbnail, *self._original_keys(result)]
        if size == "full":
            candidates = [*candidates[1:], thumbnail]
        for key in candidates:
            if self.bucket.exists(key):
                seconds = self.settings.photo_link_seconds
                return PhotoLink(
                    url=self.bucket.presigned_get(key, seconds),
                    size="thumbnail" if key == thumbnail else "full",
                    expires_in=seconds,
                )
        raise NotFoundError(f"no photo is kept for prediction {result_id}")

    def photo_origin(self) -> str:
        """Where photo links point: the review page's Content-Security-Policy lets images come from there."""
        parts = urlsplit(self.bucket.presigned_get(self.bucket.thumbnail_key("origin"), 60))
        return f"{parts.scheme}://{parts.netloc}"

    def _original_keys(self, result: Result) -> list[str]:
        """Where the original may be: its photo_key, else where the nightly job put it (processed/, failed/)."""
        keys = [result.photo_key] if result.photo_key else []
        ours = f"s3://{self.bucket.name}/"
        if result.source.startswith(ours):
            key = result.source.removeprefix(ours)
            keys.append(key)
            incoming = self.settings.incoming_prefix
            if key.startswith(incoming):
                relative = key.removeprefix(incoming)
                keys += [self.settings.processed_prefix + relative, self.settings.failed_prefix + relative]
        return list(dict.fromkeys(keys))

    def _check_department(self, department: str, name: str) -> None:
        if department not in self.sorter.taxonomy.department_ids:
            raise InvalidRequestError(
                f"unknown {name} {department!r}; one of: {', '.join(self.sorter.taxonomy.department_ids)}"
            )

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
        return [
            DepartmentOut(id=d.id, name=d.name, description=d.description) for d in self.sorter.taxonomy.departments
        ]


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
