"""The port every store of Results implements: the jobs and the API depend on this, never on DynamoDB.

:class:`~refund_sorter.storage.dynamodb.DynamoResultStore` is the one in AWS and on the local stack; the unit
tests use an in-memory fake of the same class (``tests/fakes.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from refund_sorter.errors import NotFoundError
from refund_sorter.results import Review, Status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refund_sorter.results import Result


class ResultStore(ABC):
    """Results by id and by day."""

    @abstractmethod
    def add(self, result: Result) -> bool:
        """Store a new result; ``False`` (and nothing written) if one with that id exists already."""

    @abstractmethod
    def get(self, result_id: str) -> Result | None: ...

    @abstractmethod
    def by_day(self, day: str) -> Iterator[Result]:
        """The day's results (UTC), oldest first, fetched page by page."""

    @abstractmethod
    def replace(self, result: Result) -> None:
        """Overwrite an existing result (a person's review)."""

    @abstractmethod
    def page_by_day(self, day: str, *, limit: int, token: str | None = None) -> tuple[list[Result], str | None]:
        """One page of the day's results and the token for the next page (``None`` at the end)."""

    def relocate(self, result_id: str, photo_key: str, source: str) -> None:
        """Record that the photo of ``result_id`` is now kept at ``photo_key`` (``source`` its URI).

        Stores with atomic partial updates override this (DynamoDB does): a read-then-replace could undo a
        review written in between.

        Raises
        ------
        NotFoundError
            No Result with that id.
        """
        current = self.get(result_id)
        if current is None:
            raise NotFoundError(f"no prediction with id {result_id}")
        self.replace(current.model_copy(update={"photo_key": photo_key, "source": source}))

    def review(self, result_id: str, department: str, by: str = "local") -> Result:
        """Record a person's decision; the model's own answer (prediction, confidence) stays as it was."""
        current = self.get(result_id)
        if current is None:
            raise NotFoundError(f"no prediction with id {result_id}")
        reviewed = current.model_copy(
            update={
                "status": Status.REVIEWED,
                "department": department,
                "review": Review(department=department, by=by),
                "review_reason": None,
            }
        )
        self.replace(reviewed)
        return reviewed
