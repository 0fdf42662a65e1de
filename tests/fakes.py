"""In-memory fakes of the package's ports, for unit tests and the benchmark's storage-free variant
(cosmicpython's FakeRepository: the same abstract class, a dict behind it)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from refund_sorter.storage.base import ResultStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refund_sorter.results import Result


class MemoryResultStore(ResultStore):
    """A ResultStore in a dict: for unit tests and the benchmark's in-memory variant."""

    def __init__(self) -> None:
        self._items: dict[str, Result] = {}
        self._lock = threading.Lock()

    def add(self, result: Result) -> bool:
        with self._lock:
            if result.id in self._items:
                return False
            self._items[result.id] = result
            return True

    def get(self, result_id: str) -> Result | None:
        return self._items.get(result_id)

    def by_day(self, day: str) -> Iterator[Result]:
        yield from sorted((r for r in self._items.values() if r.day == day), key=lambda r: r.timestamp)

    def replace(self, result: Result) -> None:
        with self._lock:
            self._items[result.id] = result

    def page_by_day(self, day: str, *, limit: int, token: str | None = None) -> tuple[list[Result], str | None]:
        every = list(self.by_day(day))
        start = int(token) if token and token.isdigit() else 0
        end = start + limit
        return every[start:end], (str(end) if end < len(every) else None)
