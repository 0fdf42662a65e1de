"""The photo bucket: ``incoming/`` waits to be classified, ``processed/`` and ``failed/`` hold what was done,
``uploads/`` keeps the photos the API was sent or fetched, ``exports/`` the nightly CSVs.

One photo, one Result, wherever the photo sits: an archived copy (and a kept upload) carries its Result's id in
its object metadata (``x-amz-meta-result-id``), so asking for the photo by its new key finds the Result made
for it under its old one. A failed photo's copy also carries the reason (``x-amz-meta-error-code`` /
``-error-message`` and an ``error-code`` tag), so a person browsing ``failed/`` sees why.

An original is never deleted until its copy exists. Every failure of S3 leaves this module as the package's
:class:`~refund_sorter.errors.StorageError` (or :class:`~refund_sorter.errors.NotFoundError`), never as a raw
botocore error, except where a photo's bytes are read: that error is left as it is on purpose, because the
sorter treats an error it does not know as transient (the photo waits for the next run) and a
:class:`~refund_sorter.errors.RefundSorterError` as a verdict on the photo (a ``failed`` Result).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from refund_sorter.errors import ErrorCode, ImageError, InvalidRequestError, NotFoundError, StorageError
from refund_sorter.photos import Photo
from refund_sorter.results import stable_id

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mypy_boto3_s3 import S3Client

    from refund_sorter.config import Settings
    from refund_sorter.results import ResultError

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")  # S3 user metadata is sent as HTTP headers: printable ASCII only
_SAFE_KEY = re.compile(r"^[^\x00-\x1f\x7f]{1,1024}$")
RESULT_ID = "result-id"  # the object metadata naming the photo's Result
_ERROR_METADATA = ("error-code", "error-message")
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# The copy source moved (another run archived it) or was replaced by a new upload since it was listed.
_SOURCE_CHANGED = _MISSING | {"PreconditionFailed", "412"}
_S3_FAULTS = (ClientError, BotoCoreError)
_DELETE_KEYS = 1000  # S3 DeleteObjects' limit per request


def _code(exc: Exception) -> str:
    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else ""


@dataclass(frozen=True)
class StoredPhoto:
    """One version of an object in the bucket.

    ``recorded_id`` is the Result id the object's metadata names: archived copies and kept uploads carry one
    (what is in ``incoming/`` was put there by anyone, and its metadata is not believed).
    """

    key: str
    etag: str
    size: int
    recorded_id: str | None = None

    @property
    def quoted_etag(self) -> str:
        """The ETag as HTTP preconditions spell it (RFC 9110 entity-tag: in quotes)."""
        return f'"{self.etag}"'

    @property
    def result_id(self) -> str:
        """Bucket + key + ETag: the same photo always maps to the same Result; a re-upload is a new one."""
        return stable_id("s3", self.key, self.etag)


@dataclass(frozen=True)
class ArchivedCopy:
    """A photo copied to ``processed/`` or ``failed/`` whose original in ``incoming/`` is still to be deleted."""

    original: StoredPhoto
    key: str
    original_version: str | None


class PhotoBucket:
    """The images bucket, laid out by :class:`~refund_sorter.config.Settings` prefixes."""

    def __init__(self, settings: Settings, client: S3Client | None = None) -> None:
        if not settings.bucket:
            raise StorageError("no images bucket configured (REFUND_SORTER_BUCKET)")
        from refund_sorter.storage.clients import s3_client

        self.name = settings.bucket
        self.settings = settings
        self.client = client or s3_client()
        # (key, ETag) → Content-Type and metadata of photos read to be archived (see photo(..., to_archive=True))
        self._headers_read: dict[tuple[str, str], dict[str, Any]] = {}

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    @property
    def written_prefixes(self) -> tuple[str, ...]:
        """Where only this package writes photos: archived copies and kept uploads."""
        s = self.settings
        return (s.processed_prefix, s.failed_prefix, s.uploads_prefix)

    @property
    def photo_prefixes(self) -> tuple[str, ...]:
        """Where photos live; the API reads no others."""
        return (self.settings.incoming_prefix, *self.written_prefixes)

    def key_of(self, reference: str) -> str:
        """The key a client named, as a key or as ``s3://<this bucket>/<key>``; anything else is refused.

        Raises
        ------
        InvalidRequestError
            Another bucket, no key, control characters, or a key outside the photo prefixes.
        """
        key = reference
        if reference.lower().startswith("s3://"):
            bucket, _, key = reference[len("s3://") :].partition("/")
            if bucket != self.name:
                raise InvalidRequestError(f"s3_key names the bucket {bucket!r}; photos are read from {self.uri('')}")
        if not _SAFE_KEY.match(key):
            raise InvalidRequestError("s3_key must name an object: 1 to 1024 characters, no control characters")
        if not key.startswith(self.photo_prefixes):
            raise InvalidRequestError(f"s3_key must name a photo under {', '.join(self.photo_prefixes)}")
        return key

    # ------------------------------------------------------------------------------------------ reading

    def incoming(self) -> Iterator[StoredPhoto]:
        """Everything under ``incoming/``, page by page (never the whole listing in memory)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=self.settings.incoming_prefix
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # "folder" placeholders made by consoles
                        yield StoredPhoto(obj["Key"], obj["ETag"].strip('"'), obj["Size"])
        except _S3_FAULTS as exc:
            raise StorageError(f"could not list {self.uri(self.settings.incoming_prefix)}: {exc}") from exc

    def photo(self, stored: StoredPhoto, result_id: str | None = None, *, to_archive: bool = False) -> Photo:
        """A pipeline Photo that reads exactly this version of the object (If-Match on its ETag).

        ``to_archive``: the photo will be copied to ``processed/`` or ``failed/`` after it is read, so keep what
        the copy must carry over (Content-Type, the uploader's metadata) from the read's reply: that saves the
        copy a HeadObject request per photo. Only for a bucket object that lives one run (a handler's).
        """

        def read() -> bytes:
            if stored.size > self.settings.max_image_bytes:
                raise ImageError(
                    ErrorCode.FILE_TOO_LARGE,
                    f"the file is {stored.size:,} bytes; the limit is {self.settings.max_image_bytes:,}",
                )
            try:
                reply = self.client.get_object(Bucket=self.name, Key=stored.key, IfMatch=stored.quoted_etag)
            except self.client.exceptions.NoSuchKey as exc:
                raise NotFoundError(f"{self.uri(stored.key)} is gone") from exc
            # Any other error is left raw on purpose: see the module docstring.
            if to_archive:
                self._headers_read[stored.key, stored.etag] = {
                    "ContentType": reply.get("ContentType", ""),
                    "Metadata": reply.get("Metadata", {}),
                }
            return reply["Body"].read()

        return Photo(id=result_id or stored.result_id, source=self.uri(stored.key), read=read)

    def head(self, key: str) -> StoredPhoto:
        """The object at ``key`` now (with the Result id its metadata records, if any)."""
        try:
            reply = self.client.head_object(Bucket=self.name, Key=key)
        except _S3_FAULTS as exc:
            if _code(exc) in _MISSING:
                raise NotFoundError(f"no object {self.uri(key)}") from exc
            raise StorageError(f"could not read {self.uri(key)}: {exc}") from exc
        # Anyone with the bucket can upload to incoming/ with any metadata: a Result id found there is not believed.
        written_by_us = key.startswith(self.written_prefixes)
        recorded_id = reply.get("Metadata", {}).get(RESULT_ID) if written_by_us else None
        return StoredPhoto(key, reply["ETag"].strip('"'), reply["ContentLength"], recorded_id)

    def locate(self, key: str) -> StoredPhoto:
        """The photo a client asks for by any key it has had.

        A key under ``incoming/`` that is gone is looked for where the nightly job moves photos: the same
        relative path under ``processed/``, then ``failed/``.

        Raises
        ------
        NotFoundError
            Nowhere to be found; the message lists where we looked.
        """
        tried = [key]
        incoming = self.settings.incoming_prefix
        if key.startswith(incoming):
            relative = key.removeprefix(incoming)
            tried += [self.settings.processed_prefix + relative, self.settings.failed_prefix + relative]
        for candidate in tried:
            try:
                return self.head(candidate)
            except NotFoundError:
                continue
        where = f" (nor at {' or '.join(tried[1:])})" if len(tried) > 1 else ""
        raise NotFoundError(f"no photo at {self.uri(key)}{where}")

    def result_ids(self, stored: StoredPhoto) -> list[str]:
        """The ids this photo's Result may have, most certain first.

        The id its metadata records; the id of the object as it is; and, for an archived copy without
        metadata (moved by an older version of the nightly job), the id it had under ``incoming/``, from the
        same relative path and ETag (a copy of a single-part upload keeps its ETag).
        """
        ids = [stored.recorded_id] if stored.recorded_id else []
        ids.append(stored.result_id)
        for prefix in (self.settings.processed_prefix, self.settings.failed_prefix):
            if stored.recorded_id is None and stored.key.startswith(prefix):
                was = self.settings.incoming_prefix + stored.key.removeprefix(prefix)
                ids.append(stable_id("s3", was, stored.etag))
        return ids

    # ------------------------------------------------------------------------------------------ archiving

    def archive_key(self, stored: StoredPhoto, *, failed: bool) -> str:
        """Where the nightly job moves a photo from ``incoming/``: ``processed/`` or ``failed/``, same path."""
        prefix = self.settings.failed_prefix if failed else self.settings.processed_prefix
        return prefix + stored.key.removeprefix(self.settings.incoming_prefix)

    def copy_to_archive(
        self, stored: StoredPhoto, result_id: str, error: ResultError | None = None
    ) -> ArchivedCopy | None:
        """Copy a classified photo to ``processed/`` (or ``failed/``), its metadata naming its Result.

        The original stays until :meth:`delete_original`: the caller stores the Result in between, so a photo
        leaves ``incoming/`` only once its Result exists, and the Result names a copy that exists.
        Returns ``None`` if the original moved or was replaced since it was listed (nothing of ours to copy).
        """
        target = self.archive_key(stored, failed=error is not None)
        # The copy replaces the metadata (to add the Result's id), which drops the Content-Type and the
        # uploader's metadata unless they are sent again: from the photo's read if it kept them, else asked for.
        original = self._headers_read.pop((stored.key, stored.etag), None)
        if original is None:
            try:
                original = dict(self.client.head_object(Bucket=self.name, Key=stored.key, IfMatch=stored.quoted_etag))
            except _S3_FAULTS as exc:
                if _code(exc) in _SOURCE_CHANGED:
                    return None
                raise StorageError(f"could not read {self.uri(stored.key)}: {exc}") from exc
        metadata = {k: v for k, v in original.get("Metadata", {}).items() if k not in _ERROR_METADATA}
        metadata[RESULT_ID] = result_id
        extra: dict[str, Any] = {"MetadataDirective": "REPLACE", "Metadata": metadata}
        if original.get("ContentType"):
            extra["ContentType"] = original["ContentType"]
        if error:
            metadata |= {"error-code": error.code, "error-message": _UNPRINTABLE.sub("?", error.message)[:1024]}
            extra |= {"TaggingDirective": "REPLACE", "Tagging": f"error-code={quote(error.code)}"}
        try:
            copied = self.client.copy_object(
                Bucket=self.name,
                Key=target,
                CopySource={"Bucket": self.name, "Key": stored.key},
                CopySourceIfMatch=stored.quoted_etag,
                **extra,
            )
        except _S3_FAULTS as exc:
            if _code(exc) in _SOURCE_CHANGED:
                return None
            raise StorageError(f"could not copy {self.uri(stored.key)} to {target}: {exc}") from exc
        return ArchivedCopy(stored, target, copied.get("CopySourceVersionId"))

    def delete_original(self, copy: ArchivedCopy) -> None:
        """Delete exactly the version that was copied: a new upload under the same key in the meantime stays."""
        version = {"VersionId": copy.original_version} if copy.original_version else {}
        try:
            self.client.delete_object(Bucket=self.name, Key=copy.original.key, **version)  # type: ignore[arg-type]
        except _S3_FAULTS as exc:
            raise StorageError(f"could not delete {self.uri(copy.original.key)} after copying it: {exc}") from exc

    def delete_originals(self, copies: Sequence[ArchivedCopy]) -> list[str]:
        """:meth:`delete_original` for many photos, up to 1,000 in one DeleteObjects request (a nightly worker
        moves thousands). Returns the keys S3 refused to delete: they stay in ``incoming/`` with their Result
        stored, so the next run moves them."""
        if len(copies) == 1:
            self.delete_original(copies[0])
            return []
        refused: list[str] = []
        for start in range(0, len(copies), _DELETE_KEYS):
            objects = [
                {"Key": c.original.key, "VersionId": c.original_version}
                if c.original_version
                else {"Key": c.original.key}
                for c in copies[start : start + _DELETE_KEYS]
            ]
            try:
                reply = self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects, "Quiet": True})  # type: ignore[typeddict-item]
            except _S3_FAULTS as exc:
                raise StorageError(f"could not delete {len(objects)} originals after copying them: {exc}") from exc
            refused += [error["Key"] for error in reply.get("Errors", [])]
        return refused

    # ------------------------------------------------------------------------------------------ writing

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """A small object of ours (a nightly run's manifest, chunk or summary)."""
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)
        except _S3_FAULTS as exc:
            raise StorageError(f"could not write {self.uri(key)}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except _S3_FAULTS as exc:
            if _code(exc) in _MISSING:
                raise NotFoundError(f"no object {self.uri(key)}") from exc
            raise StorageError(f"could not read {self.uri(key)}: {exc}") from exc

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (for small prefixes of ours, such as one run's map results)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        try:
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        except _S3_FAULTS as exc:
            raise StorageError(f"could not list {self.uri(prefix)}: {exc}") from exc

    def put_upload(self, result_id: str, data: bytes, extension: str, content_type: str) -> str:
        """Keep a photo the API was sent or fetched, as ``uploads/<result id>.<extension>``; returns its key."""
        key = f"{self.settings.uploads_prefix}{result_id}.{extension}"
        try:
            self.client.put_object(
                Bucket=self.name, Key=key, Body=data, ContentType=content_type, Metadata={RESULT_ID: result_id}
            )
        except _S3_FAULTS as exc:
            raise StorageError(f"could not keep the photo at {self.uri(key)}: {exc}") from exc
        return key

    def put_export(self, key: str, body: object, content_type: str = "text/csv; charset=utf-8") -> None:
        # One PUT (up to 5 GB; a night's CSV is megabytes): no multipart upload, so no parts to abort or grant.
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type)  # type: ignore[arg-type]
        except _S3_FAULTS as exc:
            raise StorageError(f"could not write {self.uri(key)}: {exc}") from exc

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
