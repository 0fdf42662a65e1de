"""The port every store of Results implements: the jobs and the API depend on this, never on DynamoDB.

:class:`~refund_sorter.storage.dynamodb.DynamoResultStore` is the one in AWS and on the local stack; the unit
tests use an in-memory fake of the same class (``tests/fakes.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal

from refund_sorter.errors import ErrorCode, NotFoundError, ReviewError
from refund_sorter.results import Status
from refund_sorter.reviews import record_decision, take_back

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from refund_sorter.results import Result


# The review queue's orders (GET /predictions?status=needs_review&order=...).
QueueOrder = Literal["informative", "oldest"]
QUEUE_ORDERS: tuple[QueueOrder, ...] = ("informative", "oldest")

# What a person's decision (or undo) changes on a Result; everything else is the model's and the jobs'.
REVIEW_FIELDS = frozenset({"status", "department", "review", "review_history", "revision"})


class ResultStore(ABC):
    """Results by id and by day."""

    @abstractmethod
    def add(self, result: Result) -> bool:
        """Store a new result; ``False`` (and nothing written) if one with that id exists already."""

    @abstractmethod
    def get(self, result_id: str) -> Result | None: ...

    def get_many(self, result_ids: Iterable[str]) -> dict[str, Result]:
        """The Results that exist among ``result_ids``, by id (missing ids are simply absent).

        Stores that can read many items in one request (DynamoDB's BatchGetItem) override this.
        """
        found = {result_id: self.get(result_id) for result_id in result_ids}
        return {result_id: result for result_id, result in found.items() if result is not None}

    @abstractmethod
    def by_day(self, day: str) -> Iterator[Result]:
        """The day's results (UTC), oldest first, fetched page by page."""

    @abstractmethod
    def page_by_day(self, day: str, *, limit: int, token: str | None = None) -> tuple[list[Result], str | None]:
        """One page of the day's results and the token for the next page (``None`` at the end)."""

    @abstractmethod
    def relocate(self, result_id: str, photo_key: str, source: str) -> None:
        """Record that the photo of ``result_id`` is now kept at ``photo_key`` (``source`` its URI), changing
        nothing else: a person's review written meanwhile must stay.

        Raises
        ------
        NotFoundError
            No Result with that id.
        """

    # ------------------------------------------------------------------ the review loop (refund_sorter.reviews)

    @abstractmethod
    def save_review(self, result: Result, *, revision: int) -> bool:
        """Write ``result``'s review state (:data:`REVIEW_FIELDS`) only if the stored Result is still at
        ``revision``; ``False`` (nothing written) if it changed or is gone. The one write the review loop makes: a
        decision never overwrites one it did not see, and never touches what the model or the jobs wrote."""

    @abstractmethod
    def page_queue(
        self,
        *,
        limit: int,
        token: str | None = None,
        day: str | None = None,
        department: str | None = None,
        order: QueueOrder = "oldest",
    ) -> tuple[list[Result], str | None]:
        """One page of the ``needs_review`` queue (or of one ``day``; or of one predicted ``department``), and
        the token for the next page (``None`` at the end).

        ``order``: ``oldest`` first across days, or ``informative``: lowest ``priority`` first (the photos whose
        answer teaches the head most), then the Results stored before they had a priority, oldest first. Either
        way an item's place is fixed, so paging on while people decide neither skips nor repeats a photo."""

    @abstractmethod
    def count_queue(self, *, day: str | None = None, department: str | None = None) -> int:
        """How many Results wait for a person (all days, or one day; all departments, or one predicted)."""

    def count_decided(self, day: str) -> int:
        """How many of the day's Results a person has decided."""
        return sum(1 for result in self.by_day(day) if result.status is Status.REVIEWED)

    def review(self, result_id: str, department: str, by: str = "local", *, revision: int | None = None) -> Result:
        """Record a person's decision (:func:`refund_sorter.reviews.record_decision`) as a conditional write.

        Raises
        ------
        NotFoundError
            No Result with that id.
        ReviewError
            See :func:`~refund_sorter.reviews.record_decision`; also ``review_conflict`` when another decision
            landed between reading the Result and writing it.
        """
        current = self._existing(result_id)
        return self._swap(current, record_decision(current, department, by, revision=revision))

    def undo_review(self, result_id: str, by: str = "local", *, revision: int | None = None) -> Result:
        """Take back the decision in force (:func:`refund_sorter.reviews.take_back`) as a conditional write."""
        current = self._existing(result_id)
        return self._swap(current, take_back(current, by, revision=revision))

    def _existing(self, result_id: str) -> Result:
        current = self.get(result_id)
        if current is None:
            raise NotFoundError(f"no prediction with id {result_id}")
        return current

    def _swap(self, current: Result, changed: Result) -> Result:
        if not self.save_review(changed, revision=current.revision):
            raise ReviewError(
                ErrorCode.REVIEW_CONFLICT, f"prediction {current.id} changed while this decision was being saved"
            )
        return changed
