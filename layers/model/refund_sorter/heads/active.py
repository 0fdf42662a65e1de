"""The head a running function uses now: the ACTIVE pointer, re-read at most every ``ttl`` seconds.

A Lambda execution environment lives for hours; reading the pointer once per cold start would keep an old
head that long. Re-reading it on every photo would cost a DynamoDB read each. So the pointer is cached for
``head_pointer_ttl_seconds`` (60 s by default): a version switched with ``refund-sorter models activate``
reaches every running function within a minute, without a redeploy. A head's files are read from S3 once
per version and process.

When the pointer cannot be read (DynamoDB or S3 trouble), the function keeps the head it had and tries
again after the next ``ttl``: a storage hiccup never switches the sorting off. A version trained on another
backbone is refused (its weights would be applied to features they were never fitted to) and the ImageNet
taxonomy sorts until the pointer moves.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from refund_sorter.errors import RefundSorterError
from refund_sorter.heads.model import other_backbone

if TYPE_CHECKING:
    from collections.abc import Callable

    from refund_sorter.config import Settings
    from refund_sorter.heads.model import Head
    from refund_sorter.heads.registry import ModelRegistry

logger = logging.getLogger(__name__)


class HeadSource(Protocol):
    """Where a Sorter gets the head to apply (``None``: no head, the ImageNet taxonomy sorts)."""

    def current(self) -> Head | None: ...

    def forget(self) -> None:
        """Drop what was read, so the next :meth:`current` reads the pointer again."""


class FixedHead:
    """Always the same head: ``refund-sorter classify --head MODEL_DIR`` and the benchmark."""

    def __init__(self, head: Head | None) -> None:
        self.head = head

    def current(self) -> Head | None:
        return self.head

    def forget(self) -> None:
        pass  # nothing was read


class ActiveHead:
    """The registry's active head, with the pointer cached for ``ttl`` seconds.

    Parameters
    ----------
    registry
        Where the pointer and the versions are.
    backbone
        The running classifier's version: a head trained on another backbone is refused.
    ttl
        Seconds a pointer read is trusted.
    clock
        Monotonic seconds; tests inject their own to move time without sleeping.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        backbone: str,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.backbone = backbone
        self.ttl = ttl
        self.clock = clock
        self._head: Head | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def current(self) -> Head | None:
        with self._lock:
            now = self.clock()
            if self._checked_at is None or now - self._checked_at >= self.ttl:
                self._checked_at = now
                self._refresh()
            return self._head

    def forget(self) -> None:
        with self._lock:
            self._head, self._checked_at = None, None

    def _refresh(self) -> None:
        try:
            version = self.registry.pointer().version
            if version is None:
                self._head = None
            elif self._head is None or self._head.version != version:
                head = self.registry.load(version)
                if head.backbone != self.backbone:
                    why = other_backbone(f"model version {version}", head.backbone, self.backbone)
                    logger.error("not using the active model version (the ImageNet taxonomy sorts): %s", why)
                    self._head = None
                else:
                    logger.info("now sorting with model version %s", version)
                    self._head = head
        except RefundSorterError as exc:
            logger.warning("could not read the active model (keeping %s): %r", self._version, exc)

    @property
    def _version(self) -> str | None:
        return self._head.version if self._head else None


def active_heads(settings: Settings, backbone: str) -> HeadSource:
    """The ACTIVE pointer when a models table is configured (in AWS and on the local stack), else no head."""
    if not (settings.models_table and settings.bucket):
        return FixedHead(None)
    from refund_sorter.heads.registry import ModelRegistry

    return ActiveHead(ModelRegistry(settings), backbone, ttl=settings.head_pointer_ttl_seconds)
