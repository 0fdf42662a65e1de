"""Model versions in the bucket and the ACTIVE pointer.

Versions are immutable folders ``models/<version>/`` in the images bucket (``version.json``, ``head.npz``, the
report). Which one the functions use is one DynamoDB item, ``{"id": "active"}`` in the models table: its
``version`` (absent: no head, the ImageNet taxonomy sorts as before) and ``history``, the versions active
before it, newest first, so ``rollback`` needs no bookkeeping by people.

Why a DynamoDB item rather than an SSM parameter: a conditional write makes activate/rollback safe when two
people do it at once (the later one fails rather than silently undoing the other's history), the history
lives in the same item, and a read is a strongly consistent GetItem that costs ~$0.125 per million — at one
read per function instance per minute, nothing. The table is on-demand: no idle cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refund_sorter.errors import NotFoundError, StorageError
from refund_sorter.heads.model import HEAD_FILE, VERSION_FILE, Head, HeadError
from refund_sorter.results import utc_now

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

    from refund_sorter.config import Settings

logger = logging.getLogger(__name__)

POINTER_ID = "active"
# Versions kept in the pointer's history: rollback can go this many steps back.
HISTORY_LENGTH = 20
CONTENT_TYPES = {".json": "application/json", ".npz": "application/octet-stream", ".md": "text/markdown",
                 ".png": "image/png", ".svg": "image/svg+xml", ".html": "text/html"}  # fmt: skip


@dataclass(frozen=True)
class Pointer:
    """The ACTIVE pointer: the version in use (``None``: none) and the ones before it, newest first."""

    version: str | None
    history: tuple[str, ...] = ()
    at: str = ""
    by: str = ""


class ModelRegistry:
    """Model versions (S3) and the active pointer (DynamoDB).

    Parameters
    ----------
    settings
        ``bucket``, ``models_table`` and ``models_prefix`` say where things are.
    s3, dynamodb
        Clients; by default the process-wide ones from :mod:`refund_sorter.storage.clients`.
    """

    def __init__(self, settings: Settings, s3: S3Client | None = None, dynamodb: DynamoDBClient | None = None):
        if not settings.bucket or not settings.models_table:
            raise StorageError("no models bucket/table configured (REFUND_SORTER_BUCKET, REFUND_SORTER_MODELS_TABLE)")
        self.settings = settings
        self.bucket = settings.bucket
        self.table = settings.models_table
        self.prefix = settings.models_prefix
        self._s3 = s3
        self._dynamodb = dynamodb

    # Clients on first use: a function builds its Sorter (and so this) at cold start, and ~100 ms per client
    # would be paid even by requests that never classify.
    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            from refund_sorter.storage.clients import s3_client

            self._s3 = s3_client()
        return self._s3

    @property
    def dynamodb(self) -> DynamoDBClient:
        if self._dynamodb is None:
            from refund_sorter.storage.clients import dynamodb_client

            self._dynamodb = dynamodb_client()
        return self._dynamodb

    # ------------------------------------------------------------------ versions

    def key(self, version: str, name: str) -> str:
        return f"{self.prefix}{version}/{name}"

    def publish(self, folder: Path) -> str:
        """Upload a model version folder (``refund-sorter train --out``'s) as ``models/<version>/``."""
        head = Head.load(folder)
        if self.exists(head.version):
            raise HeadError(f"version {head.version} exists already; versions are never overwritten")
        # version.json last: a version is listed only once all its files are there.
        files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name == VERSION_FILE)
        for path in files:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key(head.version, path.name),
                Body=path.read_bytes(),
                ContentType=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
            )
        return head.version

    def exists(self, version: str) -> bool:
        reply = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.key(version, VERSION_FILE), MaxKeys=1)
        return reply.get("KeyCount", 0) > 0

    def versions(self) -> Iterator[dict[str, Any]]:
        """Every version's ``version.json``, oldest first (version ids start with their UTC time)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
        names = sorted(p["Prefix"][len(self.prefix) : -1] for page in pages for p in page.get("CommonPrefixes", []))
        for name in names:
            try:
                yield self.card(name)
            except NotFoundError:  # a version still being uploaded (version.json comes last)
                continue

    def card(self, version: str) -> dict[str, Any]:
        import json

        return dict(json.loads(self.read(version, VERSION_FILE)))

    def read(self, version: str, name: str) -> bytes:
        try:
            reply = self.s3.get_object(Bucket=self.bucket, Key=self.key(version, name))
        except self.s3.exceptions.NoSuchKey as exc:
            raise NotFoundError(f"no model version {version} (s3://{self.bucket}/{self.key(version, name)})") from exc
        return reply["Body"].read()

    def load(self, version: str) -> Head:
        return Head.from_bytes(self.read(version, VERSION_FILE), self.read(version, HEAD_FILE))

    # ------------------------------------------------------------------ the pointer

    def pointer(self) -> Pointer:
        try:
            reply = self.dynamodb.get_item(TableName=self.table, Key={"id": {"S": POINTER_ID}}, ConsistentRead=True)
        except Exception as exc:
            raise StorageError(f"could not read the active model: {exc}") from exc
        item = reply.get("Item")
        if not item:
            return Pointer(None)
        return Pointer(
            version=item["version"]["S"] if "version" in item else None,
            history=tuple(v["S"] for v in item.get("history", {}).get("L", [])),
            at=item.get("at", {}).get("S", ""),
            by=item.get("by", {}).get("S", ""),
        )

    def activate(self, version: str, by: str = "local") -> Pointer:
        """Make ``version`` the one every function uses (within ``head_pointer_ttl_seconds``)."""
        self.load(version)  # refuse a version that is missing or unreadable before anything points at it
        current = self.pointer()
        if current.version == version:
            return current
        history = (current.version, *current.history) if current.version else current.history
        return self._write(current, Pointer(version, history[:HISTORY_LENGTH], utc_now().isoformat(), by))

    def rollback(self, by: str = "local") -> Pointer:
        """Back to the version active before the current one (none left: back to the ImageNet taxonomy)."""
        current = self.pointer()
        if current.version is None:
            raise NotFoundError("no model version is active: nothing to roll back")
        previous, *rest = current.history or (None,)
        return self._write(current, Pointer(previous, tuple(rest), utc_now().isoformat(), by))

    def _write(self, expected: Pointer, new: Pointer) -> Pointer:
        item: dict[str, Any] = {
            "id": {"S": POINTER_ID},
            "history": {"L": [{"S": v} for v in new.history]},
            "at": {"S": new.at},
            "by": {"S": new.by},
        }
        if new.version:
            item["version"] = {"S": new.version}
        # Optimistic lock on what we read: two people switching at once cannot lose each other's history.
        if expected.at:
            condition: dict[str, Any] = {
                "ConditionExpression": "#at = :at",
                "ExpressionAttributeNames": {"#at": "at"},
                "ExpressionAttributeValues": {":at": {"S": expected.at}},
            }
        else:
            condition = {"ConditionExpression": "attribute_not_exists(id)"}
        try:
            self.dynamodb.put_item(TableName=self.table, Item=item, **condition)
        except self.dynamodb.exceptions.ConditionalCheckFailedException as exc:
            raise StorageError("the active model changed meanwhile; look again (models list) and retry") from exc
        logger.info("active model: %s (was %s)", new.version, expected.version)
        return new
