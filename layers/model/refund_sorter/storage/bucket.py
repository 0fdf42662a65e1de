"""The photo bucket: ``incoming/`` waits to be classified, ``processed/`` and ``failed/`` hold what was done.

An original is never deleted until its copy exists; a failed photo's copy carries the reason in its object
metadata (``x-amz-meta-error-code`` / ``-error-message``) and tags, so a person browsing ``failed/`` sees why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from refund_sorter.errors import ErrorCode, ImageError, NotFoundError, StorageError
from refund_sorter.photos import Photo
from refund_sorter.results import stable_id

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mypy_boto3_s3 import S3Client

    from refund_sorter.config import Settings
    from refund_sorter.results import ResultError

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")  # S3 user metadata is sent as HTTP headers: printable ASCII only


_DELETE_KEYS = 1000  # S3 DeleteObjects' limit per request


@dataclass(frozen=True)
class ArchiveCopy:
    """A photo copied to ``processed/`` or ``failed/`` whose original (that version) is still to be deleted."""

    target: str
    original: str
    version: str | None


@dataclass(frozen=True)
class StoredPhoto:
    key: str
    etag: str
    size: int

    @property
    def result_id(self) -> str:
        """Bucket + key + ETag: the same photo always maps to the same Result; a re-upload is a new one."""
        return stable_id("s3", self.key, self.etag)


class PhotoBucket:
    """The images bucket, laid out by :class:`~refund_sorter.config.Settings` prefixes."""

    def __init__(self, settings: Settings, client: S3Client | None = None) -> None:
        if not settings.bucket:
            raise StorageError("no images bucket configured (REFUND_SORTER_BUCKET)")
        from refund_sorter.storage.clients import s3_client

        self.name = settings.bucket
        self.settings = settings
        self.client = client or s3_client()

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def incoming(self) -> Iterator[StoredPhoto]:
        """Everything under ``incoming/``, page by page (never the whole listing in memory)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=self.settings.incoming_prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # "folder" placeholders made by consoles
                    yield StoredPhoto(obj["Key"], obj["ETag"].strip('"'), obj["Size"])

    def photo(self, stored: StoredPhoto, result_id: str | None = None) -> Photo:
        """A pipeline Photo that reads exactly this version of the object (If-Match on its ETag)."""

        def read() -> bytes:
            if stored.size > self.settings.max_image_bytes:
                raise ImageError(
                    ErrorCode.FILE_TOO_LARGE,
                    f"the file is {stored.size:,} bytes; the limit is {self.settings.max_image_bytes:,}",
                )
            try:
                reply = self.client.get_object(Bucket=self.name, Key=stored.key, IfMatch=stored.etag)
            except self.client.exceptions.NoSuchKey as exc:
                raise NotFoundError(f"{self.uri(stored.key)} is gone") from exc
            return reply["Body"].read()

        return Photo(id=result_id or stored.result_id, source=self.uri(stored.key), read=read)

    def head(self, key: str) -> StoredPhoto:
        try:
            reply = self.client.head_object(Bucket=self.name, Key=key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise NotFoundError(f"no object {self.uri(key)}") from exc
            raise
        return StoredPhoto(key, reply["ETag"].strip('"'), reply["ContentLength"])

    def archive(self, stored: StoredPhoto, error: ResultError | None = None) -> str | None:
        """Move a classified photo to ``processed/`` (or ``failed/`` with the reason): copy, then delete.

        Returns the new key, or ``None`` if the original is already gone (another run moved it first).
        """
        copy = self.copy_to_archive(stored, error)
        if copy is None:
            return None
        self.delete_originals([copy])
        return copy.target

    def copy_to_archive(self, stored: StoredPhoto, error: ResultError | None = None) -> ArchiveCopy | None:
        """The first half of :meth:`archive`: the copy in ``processed/`` (or ``failed/``). ``None`` if the
        original is gone; then give the copy to :meth:`delete_originals` (which can take many at once)."""
        relative = stored.key.removeprefix(self.settings.incoming_prefix)
        prefix = self.settings.failed_prefix if error else self.settings.processed_prefix
        target = prefix + relative
        extra: dict[str, object] = {"CopySourceIfMatch": stored.etag}
        if error:
            extra |= {
                "MetadataDirective": "REPLACE",
                "Metadata": {"error-code": error.code, "error-message": _UNPRINTABLE.sub("?", error.message)[:1024]},
                "TaggingDirective": "REPLACE",
                "Tagging": f"error-code={quote(error.code)}",
            }
        try:
            copied = self.client.copy_object(
                Bucket=self.name,
                Key=target,
                CopySource={"Bucket": self.name, "Key": stored.key},
                **extra,  # type: ignore[arg-type]
            )
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"NoSuchKey", "404", "PreconditionFailed", "412"}:
                return None  # moved (or replaced by a new upload) since we listed it: nothing of ours to move
            raise StorageError(f"could not copy {self.uri(stored.key)} to {target}: {exc}") from exc
        return ArchiveCopy(target, stored.key, copied.get("CopySourceVersionId"))

    def delete_originals(self, copies: Sequence[ArchiveCopy]) -> list[str]:
        """The second half of :meth:`archive`, for many photos: delete exactly the versions that were copied (a
        new upload under the same key in the meantime stays put), up to 1,000 in one request. Returns the keys
        S3 refused to delete (they stay in ``incoming/``; their Result is stored, so the next run moves them)."""
        if len(copies) == 1:
            (copy,) = copies
            version = {"VersionId": copy.version} if copy.version else {}
            self.client.delete_object(Bucket=self.name, Key=copy.original, **version)  # type: ignore[arg-type]
            return []
        refused: list[str] = []
        for start in range(0, len(copies), _DELETE_KEYS):
            objects = [
                {"Key": c.original, "VersionId": c.version} if c.version else {"Key": c.original}
                for c in copies[start : start + _DELETE_KEYS]
            ]
            reply = self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects, "Quiet": True})  # type: ignore[typeddict-item]
            refused += [error["Key"] for error in reply.get("Errors", [])]
        return refused

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """A small object of ours (a nightly run's manifest, chunk or summary)."""
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)
        except self.client.exceptions.ClientError as exc:
            raise StorageError(f"could not write {self.uri(key)}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFoundError(f"no object {self.uri(key)}") from exc
        except self.client.exceptions.ClientError as exc:
            raise StorageError(f"could not read {self.uri(key)}: {exc}") from exc

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, page by page."""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            yield from (obj["Key"] for obj in page.get("Contents", []))

    def put_export(self, key: str, body: object, content_type: str = "text/csv; charset=utf-8") -> None:
        self.client.upload_fileobj(body, self.name, key, ExtraArgs={"ContentType": content_type})  # type: ignore[arg-type]

    def presigned_get(self, key: str, expires_seconds: int = 900) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=expires_seconds
        )
