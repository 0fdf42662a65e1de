"""Results made by hand, for tests that need some in a store without classifying photos."""

from __future__ import annotations

from datetime import UTC, datetime

from refund_sorter.results import Result, Status


def a_result(**changes: object) -> Result:
    """A classified tripod photo; ``changes`` override any field (``status``, ``timestamp``, ``error`` …)."""
    base: dict[str, object] = {
        "id": "abc",
        "source": "s3://bucket/processed/tripod.jpg",
        "status": Status.CLASSIFIED,
        "prediction": "electronics",
        "department": "electronics",
        "confidence": 0.9,
        "label": "tripod",
        "label_confidence": 0.8,
        "model_version": "test",
        "timestamp": datetime(2026, 11, 25, 2, 0, tzinfo=UTC),
    }
    return Result.model_validate(base | changes)
