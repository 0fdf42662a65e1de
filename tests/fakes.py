"""In-memory fakes of the package's ports, for unit tests and the benchmark's storage-free variant
(cosmicpython's FakeRepository: the same abstract class, a dict behind it)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from refund_sorter.errors import NotFoundError
from refund_sorter.results import Status
from refund_sorter.storage.base import REVIEW_FIELDS, QueueOrder, ResultStore

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

    def relocate(self, result_id: str, photo_key: str, source: str) -> None:
        with self._lock:
            current = self._items.get(result_id)
            if current is None:
                raise NotFoundError(f"no prediction with id {result_id}")
            self._items[result_id] = current.model_copy(update={"photo_key": photo_key, "source": source})

    def page_by_day(self, day: str, *, limit: int, token: str | None = None) -> tuple[list[Result], str | None]:
        every = list(self.by_day(day))
        start = int(token) if token and token.isdigit() else 0
        end = start + limit
        return every[start:end], (str(end) if end < len(every) else None)

    def save_review(self, result: Result, *, revision: int) -> bool:
        with self._lock:
            stored = self._items.get(result.id)
            if stored is None or stored.revision != revision:
                return False
            self._items[result.id] = stored.model_copy(update={f: getattr(result, f) for f in REVIEW_FIELDS})
            return True

    def _queue(self, day: str | None, department: str | None) -> list[Result]:
        return sorted(
            (
                r
                for r in self._items.values()
                if r.status is Status.NEEDS_REVIEW
                and (day is None or r.day == day)
                and (department is None or r.prediction == department)
            ),
            key=lambda r: (r.timestamp, r.id),
        )

    def page_queue(
        self,
        *,
        limit: int,
        token: str | None = None,
        day: str | None = None,
        department: str | None = None,
        order: QueueOrder = "oldest",
    ) -> tuple[list[Result], str | None]:
        # Like DynamoDB's start key, the token is the position of the last item handed out, not an offset: items
        # decided in the meantime do not shift the next page.
        where = _rank if order == "informative" else _position
        waiting = sorted((r for r in self._queue(day, department) if token is None or where(r) > token), key=where)
        page = waiting[:limit]
        more = len(waiting) > limit
        return page, (where(page[-1]) if more else None)

    def count_queue(self, *, day: str | None = None, department: str | None = None) -> int:
        return len(self._queue(day, department))


def _position(result: Result) -> str:
    return f"{result.timestamp.isoformat()}|{result.id}"


def _rank(result: Result) -> str:
    # Ranked first (priority as fixed-width text sorts as the number), then the unranked, oldest first.
    ranked = "0" if result.priority is not None else "1"
    return f"{ranked}|{result.priority or 0:.6f}|{_position(result)}"
