"""Champion and challenger on the local stack (moto, the real model on the clothing photos): the training job
compares the active head with a new one on held-out decisions, activates by the rule only, records why in the
version's version.json, survives a rollback racing it, and never moves the pointer when training fails."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import TYPE_CHECKING, Any

import pytest

from refund_sorter.errors import StorageError
from refund_sorter.heads.active import FixedHead
from refund_sorter.heads.model import Head
from refund_sorter.jobs.nightly import run_nightly
from refund_sorter.results import utc_now
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.commands import main
from refund_sorter_cli.model_admin import ModelCatalogue
from refund_sorter_cli.stepfunctions import LocalLambdas
from refund_sorter_training import job
from refund_sorter_training.job import train_on_stack
from tests.conftest import CLOTHING
from tests.integration.nightly import run_night
from tests.integration.test_training_job import label

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.config import Settings
    from tests.integration.conftest import LocalAws

DEPARTMENTS = ("hat", "pants", "shoes")


def catalogue(aws: LocalAws) -> ModelCatalogue:
    return ModelCatalogue(aws.settings, aws.s3, aws.dynamodb)


def decided_night(aws: LocalAws, sorter: Sorter, departments: tuple[str, ...] = DEPARTMENTS) -> int:
    """A night of the clothing photos classified without a head, every one then decided by a person (its true
    department); returns the number of decisions."""
    for department in departments:
        for photo in sorted((CLOTHING / department).iterdir()):
            aws.put_photo(f"incoming/{department}/{photo.name}", photo.read_bytes())
    plain = Sorter(aws.settings, sorter.classifier, sorter.taxonomy, heads=FixedHead(None))
    run_nightly(plain, aws.store, aws.bucket)
    results = list(aws.store.by_day(utc_now().date().isoformat()))
    for result in results:
        if result.review is None:  # the photo's folder is its department (incoming/<department>/, processed/...)
            aws.store.review(result.id, result.source.split("/")[-2], by="tester")
    return len(results)


@pytest.fixture
def stack_with_decisions(aws: LocalAws, sorter: Sorter) -> LocalAws:
    """10 labelled photos a department (features recorded on arrival) and 36 decisions."""
    for department in DEPARTMENTS:
        label(aws, department, 10)
    assert decided_night(aws, sorter) == 36
    # These tests are about the promotion rule: the hold-out threshold (the control rule) lets a head fit on 40
    # labelled photos sort some decisions; set on those 40 alone, it sorts none, and neither side could win.
    aws.settings = aws.settings.model_copy(update={"threshold_from_labelled_only": False})
    return aws


def settings_of(aws: LocalAws, **changes: Any) -> Settings:
    return aws.settings.model_copy(update={"held_out_fraction": 0.3, **changes})


def train(aws: LocalAws, *, seed: int, **changes: Any) -> dict[str, Any]:
    return train_on_stack(settings_of(aws, **changes), aws.bucket, aws.store, catalogue(aws), seed=seed, activate=None)


def promotion_of(aws: LocalAws, version: str) -> dict[str, Any]:
    record: dict[str, Any] = catalogue(aws).card(version)["promotion"]
    return record


def sorts_nothing(aws: LocalAws, version: str, tmp_path: Path, name: str = "weak") -> str:
    """Publish and activate a copy of ``version`` that auto-sorts nothing (threshold above 1): a weak champion."""
    admin = catalogue(aws)
    weak = dataclasses.replace(admin.load(version), version=f"{version}-{name}", threshold=1.000001)
    weak.save(tmp_path / "weak")
    admin.activate(admin.publish(tmp_path / "weak"))
    return weak.version


def test_the_first_version_is_activated_and_says_why_on_the_cli(
    stack_with_decisions: LocalAws, capsys: pytest.CaptureFixture[str]
) -> None:
    aws = stack_with_decisions
    # WHEN `refund-sorter train` runs with no head active (the rule decides: no flag)
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    (version,) = (v["version"] for v in catalogue(aws).versions())
    # THEN it is active, and its version.json says why: no champion; the challenger's held-out scores are there
    assert catalogue(aws).pointer().version == version
    promotion = promotion_of(aws, version)
    assert promotion["activated"] is True and "no head was active" in promotion["reason"]
    assert promotion["champion"] is None
    challenger = promotion["challenger"]
    assert challenger["version"] == version and challenger["n"] >= 1
    assert {"top1", "auto_share", "precision", "per_department"} <= set(challenger)
    assert "promotion: activated: no head was active" in out
    # AND the decisions held out were not trained on: the version counts only the others
    sources = catalogue(aws).card(version)["training"]["sources"]
    assert sources["reviewed"] + sources["held_out_decisions"] == 36
    assert sources["held_out_decisions"] == challenger["n"]
    # AND `models show` prints the record
    assert main(["models", "show", version]) == 0
    shown = capsys.readouterr().out
    assert "promotion: activated: no head was active" in shown and "challenger" in shown


def test_a_challenger_is_activated_only_by_the_rule(stack_with_decisions: LocalAws, tmp_path: Path) -> None:
    aws = stack_with_decisions
    first = train(aws, seed=0)
    assert first["active"]
    # WHEN a challenger has to sort a whole share more than the champion THEN it is kept, with the reason
    kept = train(aws, seed=1, promotion_min_share_delta=1.0)
    assert not kept["active"] and catalogue(aws).pointer().version == first["version"]
    promotion = promotion_of(aws, kept["version"])
    assert promotion["activated"] is False and "does not sort more" in promotion["reason"]
    assert promotion["champion"]["version"] == first["version"]
    assert promotion["champion"]["n"] == promotion["challenger"]["n"] >= 1  # the same held-out decisions
    # GIVEN a champion that sorts nothing
    weak = sorts_nothing(aws, first["version"], tmp_path)
    # WHEN auto-activation is off THEN a better challenger is published, not activated, and says how to
    off = train(aws, seed=2, auto_activate=False)
    assert catalogue(aws).pointer().version == weak
    reason = promotion_of(aws, off["version"])["reason"]
    assert "sorts more" in reason and "auto-activation is off" in reason
    # WHEN it is on THEN the better challenger becomes active by itself; rollback is still one step back
    better = train(aws, seed=3)
    promotion = promotion_of(aws, better["version"])
    assert promotion["activated"] is True and promotion["reason"].startswith("sorts more")
    assert promotion["champion"]["auto_share"] == 0.0 and promotion["challenger"]["auto_share"] > 0
    pointer = catalogue(aws).pointer()
    assert (pointer.version, pointer.history[0]) == (better["version"], weak)
    assert catalogue(aws).rollback().version == weak


def test_a_rollback_during_training_wins_and_the_record_says_so(
    stack_with_decisions: LocalAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = stack_with_decisions
    first = train(aws, seed=0)["version"]
    weak = sorts_nothing(aws, first, tmp_path)
    # GIVEN a person rolls back (weak → first) after the job compared its challenger with the weak champion
    reads = job.stack_data

    def read_then_someone_rolls_back(*args: Any) -> Any:
        data = reads(*args)
        catalogue(aws).rollback(by="a person")
        return data

    monkeypatch.setattr(job, "stack_data", read_then_someone_rolls_back)
    summary = train(aws, seed=1)
    # THEN the rollback stands: the pointer is the person's, once, and the challenger is published but not active
    pointer = catalogue(aws).pointer()
    assert (pointer.version, pointer.by) == (first, "a person")
    assert summary["version"] not in (pointer.version, *pointer.history)
    promotion = promotion_of(aws, summary["version"])
    assert promotion["activated"] is False and summary["active"] is False
    assert f"the active version changed while training (from {weak} to {first})" in promotion["reason"]
    assert "sorts more" in promotion["reason"]  # what the verdict against the weak champion was


def race(aws: LocalAws, seed: int) -> dict[str, Any]:
    """A training (the rule decides) and a person's rollback started at the same moment, on two threads."""
    outcome: dict[str, Any] = {}
    start = threading.Barrier(2)

    def promote() -> None:
        start.wait()
        outcome["summary"] = train(aws, seed=seed)

    def roll_back() -> None:
        start.wait()
        try:
            outcome["rolled_back"] = catalogue(aws).rollback(by="a person")
        except StorageError as exc:  # the loser of the race is told to look again
            outcome["refused"] = exc

    threads = [threading.Thread(target=promote), threading.Thread(target=roll_back)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return outcome


def test_promotions_and_rollbacks_racing_leave_one_consistent_pointer(
    stack_with_decisions: LocalAws, tmp_path: Path
) -> None:
    aws = stack_with_decisions
    first = train(aws, seed=0)["version"]
    for seed in (1, 2, 3):
        weak = sorts_nothing(aws, first, tmp_path, f"weak{seed}")  # the pointer: weak, then what was before
        before = catalogue(aws).pointer()
        outcome = race(aws, seed)
        version = outcome["summary"]["version"]
        promotion = promotion_of(aws, version)
        pointer = catalogue(aws).pointer()
        # THEN the pointer is one of the states a sequence of the two would leave, with an intact history
        sequences = {
            (first,): "rollback won the race: the challenger was not activated",
            (version,): "the promotion went first, the rollback was refused (it read the pointer before)",
            (weak,): "the promotion went first, then the rollback undid it",
        }
        assert (pointer.version,) in sequences, pointer
        assert set(pointer.history) <= {weak, first, *before.history}
        # AND the record agrees with the pointer: activated only if it became active
        if promotion["activated"]:
            assert pointer.version == version or (pointer.version == weak and "rolled_back" in outcome)
        else:  # lost the race, or the rollback came first and the challenger did not beat that champion
            assert version not in (pointer.version, *pointer.history)
            raced = "the active version changed while training" in promotion["reason"]
            assert raced or promotion["active_before"] == first
        if "refused" in outcome:
            assert "changed meanwhile" in str(outcome["refused"])


def test_a_failed_training_changes_nothing_active(
    stack_with_decisions: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = stack_with_decisions
    first = train(aws, seed=0)["version"]
    before = catalogue(aws).pointer()

    def broken(*args: Any, **kwargs: Any) -> Head:
        raise MemoryError("the fit ran out of memory")

    monkeypatch.setattr(job, "fit", broken)
    with pytest.raises(MemoryError):
        train(aws, seed=1)
    assert catalogue(aws).pointer() == before and [v["version"] for v in catalogue(aws).versions()] == [first]


def test_a_failed_activation_is_recorded_and_changes_nothing(
    stack_with_decisions: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = stack_with_decisions
    # GIVEN the pointer cannot be written (DynamoDB trouble) when the job activates
    admin = catalogue(aws)

    def cannot_write(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("DynamoDB is unreachable")

    monkeypatch.setattr(type(admin), "_write", cannot_write)
    with pytest.raises(ConnectionError):
        train(aws, seed=0)
    # THEN nothing is active and the published version says it was not activated, and why
    (card,) = catalogue(aws).versions()
    assert catalogue(aws).pointer().version is None
    assert card["promotion"]["activated"] is False
    assert "activating failed: DynamoDB is unreachable" in card["promotion"]["reason"]


def test_the_nightly_run_retrains_only_after_enough_new_decisions(
    stack_with_decisions: LocalAws, sorter: Sorter
) -> None:
    aws = stack_with_decisions
    admin = catalogue(aws)
    settings = settings_of(aws, retrain_min_decisions=30)

    def after_the_night(settings: Settings) -> dict[str, Any]:
        return train_on_stack(settings, aws.bucket, aws.store, admin, seed=0, nightly=True)

    # WHEN the night ends with 36 decisions and no version yet THEN it trains (and the rule activates it)
    summary = after_the_night(settings)
    assert summary["ok"] and summary["active"] and not summary.get("skipped")
    # WHEN the next night has no new decision THEN it does not train
    again = after_the_night(settings)
    assert again["skipped"] and again["new_decisions"] == 0
    assert "0 new decisions since version" in again["reason"] and "waits for 30" in again["reason"]
    assert len(list(admin.versions())) == 1
    # WHEN 12 more decisions are made (t-shirts, a department now labelled too) THEN still fewer than 30
    label(aws, "t-shirt", 10)
    assert decided_night(aws, sorter, ("t-shirt",)) == 48
    assert after_the_night(settings)["new_decisions"] == 48 - 36
    # AND with the threshold met it trains again, and the new version knows t-shirts
    trained = after_the_night(settings.model_copy(update={"retrain_min_decisions": 12}))
    assert trained["ok"] and "t-shirt" in trained["departments"]
    assert len(list(admin.versions())) == 2
    assert admin.last_training()["version"] == trained["version"]


def test_the_nightly_state_machine_retrains_after_the_night_and_a_failed_retraining_changes_nothing(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN labelled photos, and the clothing photos arriving for the night
    for department in DEPARTMENTS:
        label(aws, department, 10)
        for photo in sorted((CLOTHING / department).iterdir()):
            aws.put_photo(f"incoming/{department}/{photo.name}", photo.read_bytes())
    with LocalLambdas(
        aws.template, log_dir=tmp_path, environment={"REFUND_SORTER_RETRAIN_MIN_DECISIONS": "5"}
    ) as lambdas:
        # WHEN the first night runs THEN it classifies them, and does not retrain: nobody decided anything yet
        first = run_night(aws, lambdas)
        assert first.status == "SUCCEEDED", first.cause
        assert first.output["retrain"]["summary"]["skipped"] is True
        # AND its summary says how much was sorted without a person, by which model, and what is left waiting
        night = first.output["export"]["summary"]
        counts = night["counts"]
        assert night["auto_sorted_share"] == round(counts["classified"] / 36, 4)
        assert night["review_rate"] == round(counts["needs_review"] / 36, 4)
        assert night["review_backlog"] == counts["needs_review"] == aws.store.count_queue()
        assert night["model_versions"] == {night["model_version"]: 36} and "+head-" not in night["model_version"]
        assert [n["run"] for n in night["trend"]] == [night["run"]]
        # WHEN people decide during the day and the next night runs THEN it trains and the rule activates it
        decide_all(aws)
        second = run_night(aws, lambdas)
        assert second.status == "SUCCEEDED", second.cause
        trained = second.output["retrain"]["summary"]
        assert trained["ok"] and trained["active"] and trained["held_out"] >= 1
        assert catalogue(aws).pointer().version == trained["version"]
        assert promotion_of(aws, trained["version"])["reason"].startswith("no head was active")
        # GIVEN more decisions, and the features they need unreadable (a corrupt file)
        for photo in sorted((CLOTHING / "t-shirt").iterdir())[:6]:
            aws.put_photo(f"incoming/hat/{photo.name}", photo.read_bytes())  # decided as hats: enough to retrain
        tshirts = run_night(aws, lambdas)
        assert tshirts.status == "SUCCEEDED"
        # AND that night was sorted by the new version, and the trend has all three nights, oldest first
        night = tshirts.output["export"]["summary"]
        assert night["model_version"].endswith(f"+head-{trained['version']}")
        assert [n["run"] for n in night["trend"]] == [
            first.output["export"]["summary"]["run"],
            second.output["export"]["summary"]["run"],
            night["run"],
        ]
        assert night["trend"][1]["auto_sorted_share"] is None  # a night without photos sorts nothing
        stored = json.loads(aws.s3.get_object(Bucket=aws.settings.bucket, Key=night["summary_key"])["Body"].read())
        assert stored["trend"] == night["trend"]
        decide_all(aws)
        for key in aws.keys("embeddings/results/"):
            aws.put_photo(key, b"not an npz")
        # WHEN the night runs THEN the retraining fails, the night does not, and the active version stands
        third = run_night(aws, lambdas)
    assert third.status == "SUCCEEDED", third.cause
    failure = third.output["retrain_error"]
    assert "retrain" not in third.output and failure["Error"] == "ValueError" and "pickled" in failure["Cause"]
    assert catalogue(aws).pointer().version == trained["version"]
    assert [v["version"] for v in catalogue(aws).versions()] == [trained["version"]]


def decide_all(aws: LocalAws) -> None:
    """A person decides every waiting or auto-sorted Result of today: its folder is its department."""
    for result in aws.store.by_day(utc_now().date().isoformat()):
        if result.review is None:
            aws.store.review(result.id, result.source.split("/")[-2], by="tester")
