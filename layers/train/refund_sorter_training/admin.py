"""Writing model versions and the ACTIVE pointer: what the training function (TrainFunction) does when it
publishes a version (and activates it, when asked), and what ``refund-sorter models`` does with the user's
credentials. The other functions only read them (:class:`refund_sorter.heads.registry.ModelRegistry`), so
this ships in the training layer only, and only TrainFunction's policy may write ``models/`` and the pointer."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from refund_sorter.errors import NotFoundError, StorageError
from refund_sorter.heads.embeddings import from_bytes
from refund_sorter.heads.model import VERSION_FILE, Head, HeadError, other_backbone
from refund_sorter.heads.registry import POINTER_ID, ModelRegistry, Pointer
from refund_sorter.results import utc_now

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    import numpy as np
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# The models table's item saying when the last version was trained (beside the ACTIVE pointer's).
LAST_TRAINING_ID = "last-training"
# Versions kept in the pointer's history: rollback can go this many steps back.
HISTORY_LENGTH = 20
CONTENT_TYPES = {".json": "application/json", ".npz": "application/octet-stream", ".md": "text/markdown",
                 ".png": "image/png", ".svg": "image/svg+xml", ".html": "text/html"}  # fmt: skip


class ModelAdmin(ModelRegistry):
    """:class:`ModelRegistry` plus publishing versions and moving the pointer."""

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

    def activate(self, version: str, by: str = "local", *, expected: Pointer | None = None) -> Pointer:
        """Make ``version`` the one every function uses (within ``head_pointer_ttl_seconds``).

        ``expected``: only if the pointer is still this one (the training job passes the pointer it compared the
        version against, so a rollback meanwhile wins and the job's verdict is not applied to another champion);
        :class:`StorageError` otherwise, with nothing changed.
        """
        head = self.load(version)  # refuse a version that is missing or unreadable before anything points at it
        from refund_sorter.vision.classifier import ModelInfo  # model.json only: the training layer has no model

        running = ModelInfo.from_model_path(self.settings.model_path).version
        if head.backbone != running:  # the functions would refuse it and sort with the taxonomy: say so now
            raise HeadError(other_backbone(f"model version {version}", head.backbone, running))
        current = expected if expected is not None else self.pointer()
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

    def amend_promotion(self, version: str, promotion: dict[str, Any]) -> None:
        """Rewrite the ``promotion`` record of a published version's ``version.json`` (nothing else changes).

        The one write to a version after it is published: whether the pointer really moved is known only after
        the version exists (a rollback can win the race), and the record must say what happened."""
        card = self.card(version)
        card["promotion"] = promotion
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key(version, VERSION_FILE),
            Body=(json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
            ContentType=CONTENT_TYPES[".json"],
        )

    def last_training(self) -> dict[str, str]:
        """When the last version was trained and which (``{}`` before the first): the nightly run retrains only
        once enough decisions were made since."""
        reply = self.dynamodb.get_item(TableName=self.table, Key={"id": {"S": LAST_TRAINING_ID}}, ConsistentRead=True)
        item = reply.get("Item", {})
        return {name: item[name]["S"] for name in ("at", "version") if name in item}

    def record_training(self, at: str, version: str) -> None:
        self.dynamodb.put_item(
            TableName=self.table,
            Item={"id": {"S": LAST_TRAINING_ID}, "at": {"S": at}, "version": {"S": version}},
        )

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


def load_embeddings(client: S3Client, bucket: str, prefixes: Iterable[str], backbone: str) -> dict[str, np.ndarray]:
    """Every kept ``result id → float16 features`` by ``backbone`` under the given key prefixes (one GET per run
    file; files of another backbone give nothing)."""
    found: dict[str, np.ndarray] = {}
    paginator = client.get_paginator("list_objects_v2")
    for prefix in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".npz"):
                    found |= from_bytes(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read(), backbone)
    return found
