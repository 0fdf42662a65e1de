"""An in-memory images bucket, for unit tests of the jobs and the API service (no S3, no moto).

It keeps the real bucket's promises the jobs rely on: a photo is listed under ``incoming/`` until it is
archived; archiving copies it to ``processed/`` or ``failed/`` (with the reason and its Result's id) and then
deletes the original, and answers ``None`` when the photo is already gone; reading a photo that has gone is a
``NotFoundError``.
"""

from __future__ import annotations

import hashlib
from typing import IO, TYPE_CHECKING, cast

from refund_sorter.errors import NotFoundError
from refund_sorter.photos import Photo
from refund_sorter.storage.bucket import RESULT_ID, ArchivedCopy, PhotoBucket, StoredPhoto

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from refund_sorter.config import Settings
    from refund_sorter.results import ResultError


class MemoryBucket(PhotoBucket):
    """The images bucket as dicts of key → bytes."""

    def __init__(self, settings: Settings, name: str = "memory-bucket") -> None:
        # PhotoBucket.__init__ is skipped on purpose: it would build an S3 client.
        self.name = name
        self.settings = settings
        self.objects: dict[str, bytes] = {}
        self.metadata: dict[str, dict[str, str]] = {}  # key → user metadata (the Result id of archived copies)
        self.errors: dict[str, ResultError] = {}  # failed/ key → the reason archived with it
        self.exports: dict[str, bytes] = {}
        self.unreadable: dict[str, Exception] = {}  # key → what reading it raises (throttling, a network error)
        # Raised by every delete_original() while set: the photo is copied and its Result stored, but the
        # original stays in incoming/ (the step that can fail last).
        self.archive_error: Exception | None = None

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    def _stored(self, key: str) -> StoredPhoto:
        data = self.objects[key]
        # As PhotoBucket: the metadata's Result id is believed only where we write it, never in incoming/.
        recorded = None if key.startswith(self.settings.incoming_prefix) else self.metadata.get(key, {}).get(RESULT_ID)
        return StoredPhoto(key, hashlib.md5(data).hexdigest(), len(data), recorded)  # MD5: what S3 uses as ETag

    def incoming(self) -> Iterator[StoredPhoto]:
        for key in self.keys(self.settings.incoming_prefix):
            if key in self.objects:  # a concurrent archive may have moved it since the listing
                yield self._stored(key)

    def head(self, key: str) -> StoredPhoto:
        if key not in self.objects:
            raise NotFoundError(f"no object {self.uri(key)}")
        return self._stored(key)

    def photo(self, stored: StoredPhoto, result_id: str | None = None, *, to_archive: bool = False) -> Photo:
        def read() -> bytes:
            if stored.key in self.unreadable:
                raise self.unreadable[stored.key]
            if stored.key not in self.objects:
                raise NotFoundError(f"{self.uri(stored.key)} is gone")
            return self.objects[stored.key]

        return Photo(id=result_id or stored.result_id, source=self.uri(stored.key), read=read)

    def copy_to_archive(
        self, stored: StoredPhoto, result_id: str, error: ResultError | None = None
    ) -> ArchivedCopy | None:
        if stored.key not in self.objects or self._stored(stored.key).etag != stored.etag:
            return None  # moved or replaced since it was listed
        target = self.archive_key(stored, failed=error is not None)
        self.objects[target] = self.objects[stored.key]
        self.metadata[target] = {RESULT_ID: result_id}
        if error is not None:
            self.errors[target] = error
        return ArchivedCopy(stored, target, None)

    def delete_original(self, copy: ArchivedCopy) -> None:
        if self.archive_error is not None:
            raise self.archive_error
        self.objects.pop(copy.original.key, None)

    def delete_originals(self, copies: Sequence[ArchivedCopy]) -> list[str]:
        for copy in copies:
            self.delete_original(copy)
        return []

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.objects[key] = data

    def get_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise NotFoundError(f"no object {self.uri(key)}")
        return self.objects[key]

    def put_thumbnail(self, result_id: str, data: bytes) -> str:
        key = self.thumbnail_key(result_id)
        self.objects[key] = data
        return key

    def exists(self, key: str) -> bool:
        return key in self.objects

    def put_upload(self, result_id: str, data: bytes, extension: str, content_type: str) -> str:
        key = f"{self.settings.uploads_prefix}{result_id}.{extension}"
        self.objects[key] = data
        self.metadata[key] = {RESULT_ID: result_id}
        return key

    def put_export(self, key: str, body: object, content_type: str = "text/csv; charset=utf-8") -> None:
        self.exports[key] = cast("IO[bytes]", body).read()
