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

    import numpy as np
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from refund_sorter.api.schemas import ReviewRequest
    from refund_sorter.storage.base import QueueOrder
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.summaries import NightSummary
    from refund_sorter.vision.sorter import Sorter

# What a browser's FileReader.readAsDataURL and canvas.toDataURL put before the base64 (RFC 2397).
_DATA_URL_PREFIX = re.compile(r"^data:image/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)

# Lambda's synchronous response limit is 6 MB; bigger exports are handed out as a presigned S3 link.
INLINE_EXPORT_BYTES = 5 * 1024 * 1024


class PredictionService:
    """The API's operations over one Sorter, ResultStore and PhotoBucket.

    The store and the bucket are made on first use: their boto3 clients cost ~100 ms each of a cold start,
    which /health never needs.
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
        """Classify what the request names and store it. Returns the Result and whether it is new.

        A photo in the bucket has one Result whatever key it is asked for by (see :meth:`_predict_stored`);
        a photo sent as bytes or named by URL is kept under ``uploads/`` so a person can look at it later.
        """
        if request.s3_key is not None:
            return self._predict_stored(request.s3_key)
        if request.url is not None:
            from refund_sorter.sources.fetch import fetch_image

            data, source = fetch_image(request.url, self.settings).data, request.url
        else:
            data, source = _decode_base64(request.image_base64 or "", self.settings), None
        result, embedding, thumbnail, key = self._classify_and_keep(data, source)
        update = {"photo_key": key, "source": source or self.bucket.uri(key)}
        return self._add(result.model_copy(update=update), embedding, thumbnail)

    def _classify_and_keep(
        self, data: bytes, source: str | None
    ) -> tuple[Result, np.ndarray | None, bytes | None, str]:
        """Classify sent bytes, then keep them under ``uploads/``; returns the Result, its features and
        thumbnail, and the kept key.

        Kept only once classified: a refused photo gets a 4xx and no Result that could point at it. (Running
        the PUT alongside the model was measured on moto: no faster there, where moto shares our CPUs, and it
        needs a delete, and the permission for it, for every refused photo.)
        """
        from refund_sorter.sources.files import photo_from_bytes

        result, embedding, thumbnail = self.sorter.sort_one(
            photo_from_bytes(data, source or "upload", uuid.uuid4().hex)
        )
        return result, embedding, thumbnail, self.bucket.put_upload(result.id, data, *_file_type(data))

    def _predict_stored(self, reference: str) -> tuple[Result, bool]:
        """The one Result of a photo in the bucket, asked for by any key it has had (``incoming/``,
        ``processed/``, ``failed/``, ``uploads/``), or a new one if it has none yet."""
        stored = self.bucket.locate(self.bucket.key_of(reference))
        for result_id in self.bucket.result_ids(stored):
            existing = self.store.get(result_id)
            if existing is not None:
                return existing, False
        result, embedding, thumbnail = self.sorter.sort_one(self.bucket.photo(stored, stored.recorded_id))
        return self._add(result.model_copy(update={"photo_key": stored.key}), embedding, thumbnail)

    def _add(
        self, result: Result, embedding: np.ndarray | None = None, thumbnail: bytes | None = None
    ) -> tuple[Result, bool]:
        if thumbnail is not None:  # before the Result: a reviewer who sees it can see its photo
            self.bucket.put_thumbnail(result.id, thumbnail)
        if not self.store.add(result):  # the same photo, stored meanwhile (a concurrent request or the nightly)
            existing = self.store.get(result.id)
            return (existing or result), False
        if self.settings.bucket:  # the features, for training heads (refund_sorter.heads.embeddings)
            from refund_sorter.heads.embeddings import keep_one

            keep_one(self.bucket, self.sorter.classifier.info.version, result.id, embedding)
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
        order: QueueOrder | None = None,
    ) -> PredictionPage:
        """A day's Results (``date``), or the review queue (``status=needs_review``, ``date`` optional)."""
        if status is None:
            if date is None:
                raise InvalidRequestError("give date=YYYY-MM-DD, or status=needs_review for the review queue")
            if department is not None:
                raise InvalidRequestError("department filters the review queue: add status=needs_review")
            if order is not None:
                raise InvalidRequestError("order sorts the review queue: add status=needs_review")
            return self.list_day(date, limit, next_token)
        return self.queue(
            date=date, department=department, limit=limit, next_token=next_token, counts=counts, order=order
        )

    def default_order(self) -> QueueOrder:
        """``informative`` while a head is active (its probabilities say what a decision would teach it),
        ``oldest`` otherwise."""
        return "informative" if self.sorter.head() is not None else "oldest"

    def queue(
        self,
        *,
        date: str | None = None,
        department: str | None = None,
        limit: int = 50,
        next_token: str | None = None,
        counts: bool = True,
        order: QueueOrder | None = None,
    ) -> PredictionPage:
        """The ``needs_review`` queue in ``order`` (by default :meth:`default_order`); the first page also says
        how much is left (unless ``counts`` is false: the page asks for them once its first photo is on screen).
        A page token only continues the order it came from: a page that changes order starts again."""
        day = parse_day(date) if date is not None else None
        if department is not None:
            self._check_department(department, "department")
        order = order or self.default_order()
        items, token = self.store.page_queue(limit=limit, token=next_token, day=day, department=department, order=order)
        items = [_with_question(result) for result in items]
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
            date=day,
            status="needs_review",
            department=department,
            order=order,
            items=items,
            next_token=token,
            counts=left,
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
        """The night in numbers, with the trend of the last nightly runs (up to that day)."""
        from refund_sorter.jobs.summary import read_trend
        from refund_sorter.summaries import TrendNight, summarize

        day = parse_day(day)
        summary = summarize(day, self.store.by_day(day))
        nights = []
        for night in read_trend(self.bucket):
            try:
                entry = TrendNight.model_validate(night)
            except ValueError:  # pydantic's ValidationError: an entry this version cannot read is left out
                continue
            if entry.day <= day:
                nights.append(entry)
        return summary.model_copy(update={"trend": nights})

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
        known = [d.id for d in self.sorter.departments()]  # the active head's, else the taxonomy's
        if department not in known:
            raise InvalidRequestError(f"unknown {name} {department!r}; one of: {', '.join(known)}")

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


def _with_question(result: Result) -> Result:
    """A waiting Result stored before Results said why they are asked gets its sentence now (from its own
    top departments; its place in the queue stays where it was stored)."""
    if result.asked_because is not None:
        return result
    from refund_sorter.vision.sorter import asked

    top = [(d.department, d.confidence) for d in result.top_departments]
    return result.model_copy(update={"asked_because": asked(top, result.review_reason, None)["asked_because"]})


def _decode_base64(text: str, settings: Settings) -> bytes:
    prefix = _DATA_URL_PREFIX.match(text)
    if prefix:
        text = text[prefix.end() :]
    # A base64 string is 4/3 of the bytes: refuse an oversized one before decoding it.
    if len(text) > settings.max_image_bytes * 4 // 3 + 4:
        raise ImageError(ErrorCode.FILE_TOO_LARGE, f"the image is over the limit of {settings.max_image_bytes:,} bytes")
    try:
        # strict_mode refuses what b64decode(validate=True) refuses, without its extra regex pass (~6 ms / 3 MB)
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("image_base64 is not valid base64") from exc


def _file_type(data: bytes) -> tuple[str, str]:
    """A kept photo's file extension and media type, from its magic bytes (it was decoded, so they are known)."""
    from refund_sorter.vision.images import sniff_format

    fmt = (sniff_format(data[:16]) or "").lower()
    if not fmt:
        return "bin", "application/octet-stream"
    return {"jpeg": "jpg"}.get(fmt, fmt), f"image/{fmt}"


@cache
def get_service() -> PredictionService:
    """The process-wide service; the model session itself is only created on the first classification."""
    from refund_sorter.vision.sorter import get_sorter

    return PredictionService(get_settings(), get_sorter())
