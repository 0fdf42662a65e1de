"""What every Result must carry, whichever way it reaches a test (CLI JSON, API body, DynamoDB item, CSV row)."""

from __future__ import annotations

# design.md §3: the fields every Result carries (one DynamoDB item, one CSV row, one API body)
CONTRACT_FIELDS = frozenset(
    {"id", "source", "status", "prediction", "confidence", "label", "label_confidence", "top_k", "model_version",
     "timestamp"}
)  # fmt: skip
