"""A person's decisions on a Result: confirming or correcting the model, and taking a decision back.

Pure rules over :class:`~refund_sorter.results.Result`; a :class:`~refund_sorter.storage.base.ResultStore`
applies them as conditional writes (:meth:`~refund_sorter.storage.base.ResultStore.review`,
:meth:`~refund_sorter.storage.base.ResultStore.undo_review`), so two reviewers at once never lose an update.

- The model's answer (``prediction``, ``confidence``) is never touched; ``department`` is where the item goes now.
- Every decision and every undo is appended to ``review_history``, which only grows: an overruled or undone
  decision is still there, with who made it and when.
- Decisions stack: an undo takes back the decision in force and the one before it (if any) stands again; with
  none left, the Result is what the model made of it (``needs_review``, or ``classified`` if it never was).
- Without a ``revision``, a decision is only taken on a Result no person has decided yet (the first decision
  wins; the second reviewer hears who decided). With the ``revision`` the reviewer saw, it replaces the decision
  in force only if nothing changed since.
- Only the person who made a decision may take it back; anyone else corrects it with a new decision.
- A ``failed`` Result is refused: it has no prediction, and its photo may not even open. Re-send the photo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refund_sorter.errors import ErrorCode, ReviewError
from refund_sorter.results import Review, ReviewEvent, Status, utc_now

if TYPE_CHECKING:
    from datetime import datetime

    from refund_sorter.results import Result


def record_decision(
    current: Result, department: str, by: str, *, revision: int | None = None, at: datetime | None = None
) -> Result:
    """``current`` with a person's decision in force.

    Parameters
    ----------
    current
        The Result as stored now.
    department
        Where the person sends the item (one of the taxonomy's departments; the caller checks).
    by
        Who decided: the signed-in user.
    revision
        The revision the person saw; ``None`` means "only if nobody decided yet".
    at
        When; now by default (tests pass a fixed time).

    Raises
    ------
    ReviewError
        ``not_reviewable`` for a failed Result, ``review_conflict`` when someone decided first.
    """
    if current.status is Status.FAILED or current.prediction is None:
        raise ReviewError(
            ErrorCode.NOT_REVIEWABLE,
            f"prediction {current.id} failed ({current.error.code if current.error else 'no prediction'}): "
            "there is nothing to review; send the photo again",
        )
    _check_revision(current, revision)
    if revision is None and current.review is not None:
        raise ReviewError(
            ErrorCode.REVIEW_CONFLICT,
            f"{_describe(current.review)} already; to change it, send the revision you saw ({current.revision})",
        )
    event = ReviewEvent(action="decided", department=department, by=by, at=at or utc_now())
    return current.model_copy(
        update={
            "status": Status.REVIEWED,
            "department": department,
            "review": Review(department=department, by=by, at=event.at),
            "review_history": [*_history(current), event],
            "revision": current.revision + 1,
        }
    )


def take_back(current: Result, by: str, *, revision: int | None = None, at: datetime | None = None) -> Result:
    """``current`` with its decision in force taken back by the person who made it.

    Raises
    ------
    ReviewError
        ``nothing_to_undo``, ``not_your_decision``, or ``review_conflict`` when ``revision`` is not the stored one.
    """
    if current.review is None:
        raise ReviewError(ErrorCode.NOTHING_TO_UNDO, f"nobody has decided prediction {current.id}: nothing to undo")
    _check_revision(current, revision)
    if current.review.by != by:
        raise ReviewError(
            ErrorCode.NOT_YOUR_DECISION,
            f"{_describe(current.review)}; only they can undo it (you can correct it with a new decision)",
        )
    undone = ReviewEvent(action="undone", department=current.review.department, by=by, at=at or utc_now())
    history = [*_history(current), undone]
    standing = standing_decisions(history)
    update: dict[str, object] = {"review_history": history, "revision": current.revision + 1}
    if standing:
        before = standing[-1]
        update |= {
            "status": Status.REVIEWED,
            "department": before.department,
            "review": Review(department=before.department, by=before.by, at=before.at),
        }
    else:  # back to what the model made of it
        waits = current.review_reason is not None
        update |= {
            "status": Status.NEEDS_REVIEW if waits else Status.CLASSIFIED,
            "department": None if waits else current.prediction,
            "review": None,
        }
    return current.model_copy(update=update)


def standing_decisions(history: list[ReviewEvent]) -> list[ReviewEvent]:
    """The decisions still in force, oldest first: each ``decided`` stacks, each ``undone`` takes the top off."""
    stack: list[ReviewEvent] = []
    for event in history:
        if event.action == "decided":
            stack.append(event)
        elif stack:
            stack.pop()
    return stack


def _history(result: Result) -> list[ReviewEvent]:
    # A Result reviewed before review_history existed has its one decision only in `review`.
    if result.review is not None and not standing_decisions(result.review_history):
        review = result.review
        return [ReviewEvent(action="decided", department=review.department, by=review.by, at=review.at)]
    return list(result.review_history)


def _check_revision(current: Result, revision: int | None) -> None:
    if revision is not None and revision != current.revision:
        latest = f"{_describe(current.review)} since" if current.review else "it changed since"
        raise ReviewError(
            ErrorCode.REVIEW_CONFLICT,
            f"prediction {current.id} is at revision {current.revision}, not {revision}: {latest}",
        )


def _describe(review: Review) -> str:
    at = review.at.strftime("%Y-%m-%d %H:%M UTC")
    return f"{review.by} decided {review.department} at {at}"
