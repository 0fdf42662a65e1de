"""An in-memory images bucket, for unit tests of the jobs and the API service (no S3, no moto).

It keeps the real bucket's promises the jobs rely on: a photo is listed under ``incoming/`` until it is
archived; archiving moves it to ``processed/`` or ``failed/`` (with the reason), and answers ``None`` when the
photo is already gone; reading a photo that has gone is a ``NotFoundError``.
"""

from __future__ import annotations

import hashlib
from typing import IO, TYPE_CHECKING, cast

from refund_sorter.errors import NotFoundError
from refund_sorter.photos import Photo
from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refund_sorter.config import Settings
    from refund_sorter.results import ResultError


class MemoryBucket(PhotoBucket):
    """The images bucket as dicts of key → bytes."""

    def __init__(self, settings: Settings, name: str = "memory-bucket") -> None:
        # PhotoBucket.__init__ is skipped on purpose: it would build an S3 client.
        self.name = name
        self.settings = settings
        self.objects: dict[str, bytes] = {}
        self.errors: dict[str, ResultError] = {}  # failed/ key → the reason archived with it
        self.exports: dict[str, bytes] = {}
        self.unreadable: dict[str, Exception] = {}  # key → what reading it raises (throttling, a network error)
        self.archive_error: Exception | None = None  # raised by every archive() while set

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    def _stored(self, key: str) -> StoredPhoto:
        data = self.objects[key]
        return StoredPhoto(key, hashlib.md5(data).hexdigest(), len(data))  # what S3 uses as ETag

    def incoming(self) -> Iterator[StoredPhoto]:
        for key in self.keys(self.settings.incoming_prefix):
            if key in self.objects:  # a concurrent archive may have moved it since the listing
                yield self._stored(key)

    def head(self, key: str) -> StoredPhoto:
        if key not in self.objects:
            raise NotFoundError(f"no object {self.uri(key)}")
        return self._stored(key)

    def photo(self, stored: StoredPhoto, result_id: str | None = None) -> Photo:
        def read() -> bytes:
            if stored.key in self.unreadable:
                raise self.unreadable[stored.key]
            if stored.key not in self.objects:
                raise NotFoundError(f"{self.uri(stored.key)} is gone")
            return self.objects[stored.key]

        return Photo(id=result_id or stored.result_id, source=self.uri(stored.key), read=read)

    def archive(self, stored: StoredPhoto, error: ResultError | None = None) -> str | None:
        if self.archive_error is not None:
            raise self.archive_error
        if stored.key not in self.objects:
            return None
        relative = stored.key.removeprefix(self.settings.incoming_prefix)
        target = (self.settings.failed_prefix if error else self.settings.processed_prefix) + relative
        self.objects[target] = self.objects.pop(stored.key)
        if error is not None:
            self.errors[target] = error
        return target

    def put_export(self, key: str, body: object, content_type: str = "text/csv; charset=utf-8") -> None:
        self.exports[key] = cast("IO[bytes]", body).read()
