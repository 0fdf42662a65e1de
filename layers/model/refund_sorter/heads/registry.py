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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from refund_sorter.errors import NotFoundError, StorageError
from refund_sorter.heads.model import HEAD_FILE, VERSION_FILE, Head

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

    from refund_sorter.config import Settings

POINTER_ID = "active"


@dataclass(frozen=True)
class Pointer:
    """The ACTIVE pointer: the version in use (``None``: none) and the ones before it, newest first."""

    version: str | None
    history: tuple[str, ...] = ()
    at: str = ""
    by: str = ""


class ModelRegistry:
    """Model versions (S3) and the active pointer (DynamoDB), as the functions read them.

    Writing them (publishing a version, activate, rollback): ``refund_sorter_training.admin`` (the training
    function and ``refund-sorter models``).

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
    # would be paid even by requests that never classify. Not kept here: the process-wide clients are replaced
    # by reset_clients() (after a SnapStart restore, in tests), and this must follow.
    @property
    def s3(self) -> S3Client:
        if self._s3 is not None:
            return self._s3
        from refund_sorter.storage.clients import s3_client

        return s3_client()

    @property
    def dynamodb(self) -> DynamoDBClient:
        if self._dynamodb is not None:
            return self._dynamodb
        from refund_sorter.storage.clients import dynamodb_client

        return dynamodb_client()

    # ------------------------------------------------------------------ versions

    def key(self, version: str, name: str) -> str:
        return f"{self.prefix}{version}/{name}"

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
