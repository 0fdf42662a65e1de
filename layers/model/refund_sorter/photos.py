"""A photo to classify, whatever it came from (a file, a URL, bytes sent to the API, an S3 object).

The sources (:mod:`refund_sorter.sources`, :mod:`refund_sorter.storage.bucket`) make Photos; the sorter
(:mod:`refund_sorter.vision.sorter`) reads and classifies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Photo:
    """Where a photo is from, and how to get its bytes (``read`` is called later, on a worker thread)."""

    id: str
    source: str
    read: Callable[[], bytes]
