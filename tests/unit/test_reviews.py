"""A person's decisions (refund_sorter.reviews) and the night summary, on Results in memory: no AWS."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from refund_sorter.errors import ErrorCode, ReviewError
from refund_sorter.results import DepartmentScore, Result, ReviewReason, Status
from refund_sorter.reviews import record_decision, standing_decisions, take_back
from refund_sorter.summaries import summarize
from tests.fakes import MemoryResultStore

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def waiting(result_id: str = "r1", *, at: datetime = T0, prediction: str = "shoes", confidence: float = 0.41) -> Result:
    return Result(
        id=result_id,
        source=f"s3://bucket/incoming/{result_id}.jpg",
        status=Status.NEEDS_REVIEW,
        review_reason=ReviewReason.LOW_CONFIDENCE,
        prediction=prediction,
        confidence=confidence,
        top_departments=[DepartmentScore(department=prediction, confidence=confidence)],
        model_version="m1",
        timestamp=at,
    )


def classified(result_id: str = "c1", *, at: datetime = T0) -> Result:
    return waiting(result_id, at=at, confidence=0.93).model_copy(
        update={"status": Status.CLASSIFIED, "review_reason": None, "department": "shoes"}
    )


def failed(result_id: str = "f1") -> Result:
    return Result(
        id=result_id,
        source="upload",
        status=Status.FAILED,
        model_version="m1",
        timestamp=T0,
        error={"code": "corrupt_image", "message": "cut off"},
    )


def refused(code: ErrorCode) -> pytest.RaisesExc[ReviewError]:
    return pytest.raises(ReviewError, check=lambda e: e.code is code)


# ------------------------------------------------------------------------------------------------ deciding


def test_a_decision_keeps_the_models_answer_and_records_who() -> None:
    # GIVEN a photo the model was unsure of
    before = waiting()
    # WHEN a person sends it elsewhere
    after = record_decision(before, "toys", "ana@example.com", at=T0 + timedelta(hours=8))
    # THEN the model's answer stays, the department is the person's, and the decision is on record
    assert (after.prediction, after.confidence) == ("shoes", 0.41)
    assert (after.status, after.department) == (Status.REVIEWED, "toys")
    assert after.review is not None and (after.review.department, after.review.by) == ("toys", "ana@example.com")
    assert after.review_reason is ReviewReason.LOW_CONFIDENCE, "why a person was asked stays (the review rate)"
    assert [(e.action, e.department, e.by) for e in after.review_history] == [("decided", "toys", "ana@example.com")]
    assert after.revision == before.revision + 1


def test_confirming_the_model_is_a_decision_too() -> None:
    after = record_decision(waiting(), "shoes", "ana")
    assert after.status is Status.REVIEWED and after.review is not None and after.department == "shoes"


def test_the_second_reviewer_without_a_revision_hears_who_decided_first() -> None:
    first = record_decision(waiting(), "toys", "ana")
    with refused(ErrorCode.REVIEW_CONFLICT) as caught:
        record_decision(first, "shoes", "ben")
    assert "ana decided toys" in caught.value.message


def test_a_stale_revision_is_refused_and_the_current_one_replaces_the_decision() -> None:
    first = record_decision(waiting(), "toys", "ana")
    with refused(ErrorCode.REVIEW_CONFLICT):
        record_decision(first, "shoes", "ben", revision=0)  # what ben saw before ana decided
    corrected = record_decision(first, "shoes", "ben", revision=first.revision)
    assert corrected.department == "shoes" and corrected.review is not None and corrected.review.by == "ben"
    # ana's decision is not lost: it is in the history, under the one in force
    assert [(e.department, e.by) for e in standing_decisions(corrected.review_history)] == [
        ("toys", "ana"),
        ("shoes", "ben"),
    ]


def test_a_failed_result_cannot_be_reviewed() -> None:
    with refused(ErrorCode.NOT_REVIEWABLE) as caught:
        record_decision(failed(), "shoes", "ana")
    assert "corrupt_image" in caught.value.message


def test_an_automatically_classified_result_can_be_corrected() -> None:
    after = record_decision(classified(), "clothing", "ana")
    assert (after.status, after.department, after.prediction) == (Status.REVIEWED, "clothing", "shoes")


# ------------------------------------------------------------------------------------------------ undoing


def test_undo_puts_the_photo_back_in_the_queue_and_keeps_the_trail() -> None:
    decided = record_decision(waiting(), "toys", "ana")
    undone = take_back(decided, "ana")
    assert (undone.status, undone.department, undone.review) == (Status.NEEDS_REVIEW, None, None)
    assert undone.review_reason is ReviewReason.LOW_CONFIDENCE
    assert [(e.action, e.department) for e in undone.review_history] == [("decided", "toys"), ("undone", "toys")]
    assert undone.revision == 2
    # and it can be decided again, as if new
    again = record_decision(undone, "shoes", "ana")
    assert again.department == "shoes" and len(again.review_history) == 3


def test_undo_of_a_correction_brings_back_the_decision_before_it() -> None:
    first = record_decision(waiting(), "toys", "ana")
    corrected = record_decision(first, "shoes", "ben", revision=first.revision)
    back = take_back(corrected, "ben")
    assert (back.status, back.department) == (Status.REVIEWED, "toys")
    assert back.review is not None and back.review.by == "ana"


def test_undo_of_a_correction_of_a_classified_result_restores_the_models_department() -> None:
    back = take_back(record_decision(classified(), "clothing", "ana"), "ana")
    assert (back.status, back.department, back.review_reason) == (Status.CLASSIFIED, "shoes", None)


def test_only_the_decider_may_undo() -> None:
    decided = record_decision(waiting(), "toys", "ana")
    with refused(ErrorCode.NOT_YOUR_DECISION) as caught:
        take_back(decided, "ben")
    assert "ana decided toys" in caught.value.message


def test_nothing_to_undo() -> None:
    with refused(ErrorCode.NOTHING_TO_UNDO):
        take_back(waiting(), "ana")


def test_undo_with_a_stale_revision_is_a_conflict() -> None:
    decided = record_decision(waiting(), "toys", "ana")
    with refused(ErrorCode.REVIEW_CONFLICT):
        take_back(decided, "ana", revision=0)


def test_a_decision_made_before_the_history_existed_can_be_undone() -> None:
    # GIVEN a Result reviewed by the earlier code: a review, no history
    legacy = record_decision(waiting(), "toys", "ana").model_copy(update={"review_history": [], "revision": 0})
    undone = take_back(legacy, "ana")
    assert undone.status is Status.NEEDS_REVIEW
    assert [e.action for e in undone.review_history] == ["decided", "undone"]


# ------------------------------------------------------------------------------------------------ the store


def test_the_store_refuses_a_write_over_a_revision_it_did_not_see() -> None:
    store = MemoryResultStore()
    store.add(waiting())
    stale = store.get("r1")
    assert stale is not None
    store.review("r1", "toys", "ana")
    assert store.save_review(record_decision(stale, "shoes", "ben"), revision=stale.revision) is False
    kept = store.get("r1")
    assert kept is not None and kept.department == "toys"


def test_two_reviewers_at_once_one_decision_wins_and_none_is_lost() -> None:
    # GIVEN one waiting photo and reviewers who all press a key at the same moment
    store = MemoryResultStore()
    store.add(waiting())
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def reviewer(name: str) -> None:
        start.wait()
        try:
            store.review("r1", "toys", name)
            outcomes.append("saved")
        except ReviewError as exc:
            outcomes.append(exc.code.value)

    threads = [threading.Thread(target=reviewer, args=(f"reviewer-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN exactly one decision is stored and every other reviewer was told, none overwritten silently
    assert sorted(outcomes) == ["review_conflict"] * 7 + ["saved"]
    stored = store.get("r1")
    assert stored is not None and len(stored.review_history) == 1


def test_the_queue_is_oldest_first_and_a_decision_takes_the_photo_out() -> None:
    store = MemoryResultStore()
    for hours in (5, 1, 3):
        store.add(waiting(f"r{hours}", at=T0 + timedelta(hours=hours)))
    store.add(classified())
    page, token = store.page_queue(limit=2)
    assert [r.id for r in page] == ["r1", "r3"] and token is not None
    store.review("r1", "toys", "ana")  # decided between two pages: the next page is not shifted
    rest, end = store.page_queue(limit=2, token=token)
    assert [r.id for r in rest] == ["r5"] and end is None
    assert store.count_queue() == 2


# ------------------------------------------------------------------------------------------------ the summary


def test_the_night_summary_counts_what_the_page_draws() -> None:
    results = [
        classified("c1"),
        classified("c2"),
        waiting("w1", confidence=0.45),
        record_decision(waiting("w2", confidence=0.52), "shoes", "ana"),  # confirmed
        record_decision(waiting("w3", confidence=0.12), "toys", "ben"),  # corrected
        failed(),
    ]
    summary = summarize("2026-11-25", iter(results))
    assert summary.total == 6
    assert summary.by_status == {"classified": 2, "needs_review": 1, "reviewed": 2, "failed": 1}
    assert summary.asked == 3 and summary.review_rate == pytest.approx(3 / 5)
    assert (summary.decided, summary.confirmed, summary.corrected) == (2, 1, 1)
    assert summary.reviewers == {"ana": 1, "ben": 1}
    rows = {row.department: row for row in summary.by_department}
    assert (rows["shoes"].classified, rows["shoes"].needs_review, rows["shoes"].reviewed) == (2, 1, 1)
    assert rows["toys"].reviewed == 1
    bars = {bin_.low: bin_ for bin_ in summary.confidence_histogram}
    assert len(bars) == 10
    assert (bars[0.9].classified, bars[0.4].asked, bars[0.5].asked, bars[0.1].asked) == (2, 1, 1, 1)
    assert sum(b.classified + b.asked for b in bars.values()) == 5, "failed Results have no confidence to draw"
