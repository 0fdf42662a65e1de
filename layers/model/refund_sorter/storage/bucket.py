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
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from refund_sorter.config import Settings
    from refund_sorter.results import ResultError

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")  # S3 user metadata is sent as HTTP headers: printable ASCII only


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
        # Delete exactly the version we copied: a new upload under the same key in the meantime stays put.
        version = copied.get("CopySourceVersionId")
        if version:
            self.client.delete_object(Bucket=self.name, Key=stored.key, VersionId=version)
        else:
            self.client.delete_object(Bucket=self.name, Key=stored.key)
        return target

    def put_export(self, key: str, body: object, content_type: str = "text/csv; charset=utf-8") -> None:
        self.client.upload_fileobj(body, self.name, key, ExtraArgs={"ContentType": content_type})  # type: ignore[arg-type]

    def presigned_get(self, key: str, expires_seconds: int = 900) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=expires_seconds
        )

    # ------------------------------------------------------------------ what a reviewer looks at

    def thumbnail_key(self, result_id: str) -> str:
        return f"{self.settings.thumbnails_prefix}{result_id}.jpg"

    def put_thumbnail(self, result_id: str, data: bytes) -> str:
        """Store a Result's thumbnail (``thumbnails/<id>.jpg``). Its content never changes for that id (the id
        names one version of one photo), so browsers may keep it as long as they like."""
        key = self.thumbnail_key(result_id)
        try:
            self.client.put_object(
                Bucket=self.name,
                Key=key,
                Body=data,
                ContentType="image/jpeg",
                CacheControl="private, max-age=31536000, immutable",
            )
        except self.client.exceptions.ClientError as exc:
            raise StorageError(f"could not store {self.uri(key)}: {exc}") from exc
        return key

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.name, Key=key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise StorageError(f"could not look for {self.uri(key)}: {exc}") from exc
        return True
