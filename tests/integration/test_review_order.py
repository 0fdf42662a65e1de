"""The review queue's order over real HTTP on DynamoDB (moto): most informative first, stable paging while people
decide, Results stored before priorities existed, the default that follows the active head, and refusals."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import requests

from refund_sorter.api.service import get_service
from refund_sorter.heads.active import ActiveHead
from refund_sorter.vision.sorter import Sorter, get_sorter
from refund_sorter_cli.samples import photo_bytes
from refund_sorter_training.admin import ModelAdmin
from tests.review_data import informative_order, seed_ranked

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import LocalAws, StartApi

NOW = datetime.now(UTC)


@pytest.fixture
def api(start_api: StartApi) -> str:
    return start_api()


def listing(api: str, **params: Any) -> requests.Response:
    return requests.get(f"{api}/predictions", params={"status": "needs_review", **params}, timeout=30)


def page(api: str, **params: Any) -> dict[str, Any]:
    reply = listing(api, **params)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_the_informative_order_pages_on_while_people_decide_without_skipping_or_repeating(
    api: str, aws: LocalAws
) -> None:
    # GIVEN 10 ranked photos and 3 stored before the queue had an order (no priority, no sentence)
    ranked = seed_ranked(aws.store, aws.bucket, 10)
    old = seed_ranked(aws.store, aws.bucket, 3, ranked=False, start=10)
    expected = informative_order(ranked + old)
    assert len({r.priority for r in ranked}) > 5, "the seeded priorities differ"
    # WHEN two reviewers page through it three at a time, deciding as they go (a photo on screen, and one not
    # yet shown that another reviewer decided)
    shown: list[str] = []
    first = page(api, order="informative", limit=3)
    shown += [r["id"] for r in first["items"]]
    for result_id in (shown[0], shown[1], expected[7]):
        reply = requests.patch(f"{api}/predictions/{result_id}", json={"category": "toys_games"}, timeout=30)
        assert reply.status_code == 200, reply.text
    token = first["next_token"]
    while token:
        more = page(api, order="informative", limit=3, next_token=token)
        shown += [r["id"] for r in more["items"]]
        token = more["next_token"]
    # THEN every photo still waiting was shown once, in the informative order; the one decided unseen was not
    assert shown == [i for i in expected if i != expected[7]]
    assert first["order"] == "informative"
    # AND each says why it is asked; the old ones get their sentence from their own top departments
    listed = {r["id"]: r for r in page(api, order="informative", limit=100)["items"]}
    assert all(r["asked_because"] for r in listed.values())
    assert [listed[r.id]["priority"] for r in old] == [None] * 3
    priorities = [r["priority"] for r in listed.values() if r["priority"] is not None]
    assert priorities == sorted(priorities)
    # AND oldest first still lists them all by time
    assert [r["id"] for r in page(api, order="oldest", limit=100)["items"]] == [
        r.id for r in sorted(ranked + old, key=lambda r: r.timestamp) if r.id not in {shown[0], shown[1], expected[7]}
    ]


@pytest.mark.parametrize("limit", [1, 2, 5, 100])
def test_informative_pages_narrowed_by_day_or_department_list_each_once(api: str, aws: LocalAws, limit: int) -> None:
    results = seed_ranked(aws.store, aws.bucket, 8) + seed_ranked(aws.store, aws.bucket, 2, ranked=False, start=8)
    by_id = {r.id: r for r in results}
    department, day = results[0].prediction, results[-1].day
    for params, keep in (
        ({"department": department}, lambda r: r.prediction == department),
        ({"date": day}, lambda r: r.day == day),
    ):
        ids: list[str] = []
        token = None
        while True:
            body = page(api, order="informative", limit=limit, **params, **({"next_token": token} if token else {}))
            ids += [r["id"] for r in body["items"]]
            if not (token := body["next_token"]):
                break
        assert ids == [i for i in informative_order(results) if keep(by_id[i])], params


def test_an_undone_decision_goes_back_to_its_place(api: str, aws: LocalAws) -> None:
    results = seed_ranked(aws.store, aws.bucket, 4)
    order = informative_order(results)
    assert requests.patch(f"{api}/predictions/{order[0]}", json={"category": "toys_games"}, timeout=30).ok
    assert [r["id"] for r in page(api, order="informative")["items"]] == order[1:]
    assert requests.delete(f"{api}/predictions/{order[0]}/review", timeout=30).ok
    assert [r["id"] for r in page(api, order="informative")["items"]] == order


def test_photos_the_api_classifies_for_review_carry_their_priority(api: str, aws: LocalAws) -> None:
    # GIVEN a cat (no product: the taxonomy sends it to a person) sent to the API
    data = base64.b64encode(photo_bytes("skimage/chelsea")).decode()
    reply = requests.post(f"{api}/predictions", json={"image_base64": data}, timeout=60)
    assert reply.status_code == 201, reply.text
    result = reply.json()
    # THEN it waits with a priority and a sentence, and the informative index lists it
    assert result["status"] == "needs_review"
    assert 0 <= result["priority"] <= 1
    assert "no product" in result["asked_because"]
    assert [r["id"] for r in page(api, order="informative")["items"]] == [result["id"]]


def test_the_default_order_follows_the_active_head(
    api: str, aws: LocalAws, clothing_head: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the API's sorter following the ACTIVE pointer (read again at once: no TTL), and no head active
    base = get_sorter()
    admin = ModelAdmin(aws.settings, aws.s3, aws.dynamodb)
    following = Sorter(
        aws.settings, base.classifier, base.taxonomy, heads=ActiveHead(admin, base.classifier.info.version, ttl=0)
    )
    monkeypatch.setattr(get_service(), "sorter", following)
    seed_ranked(aws.store, aws.bucket, 3)
    # THEN oldest first
    assert page(api)["order"] == "oldest"
    # WHEN a head is activated THEN the informative order, unless the client asks for the oldest first
    admin.activate(admin.publish(clothing_head))
    assert page(api)["order"] == "informative"
    assert page(api, order="oldest")["order"] == "oldest"
    # AND rolled back, oldest first again
    admin.rollback()
    assert page(api)["order"] == "oldest"


def _token(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


GOOD_KEY = {"id": {"S": "x"}, "queue": {"S": "needs_review"}}
HOSTILE = [
    {"order": "random"},
    {"order": "INFORMATIVE"},
    {"order": ""},
    {"order": "informative", "next_token": "abc"},
    {"order": "informative", "next_token": _token({"ranked": GOOD_KEY | {"priority": {"N": "nan"}}})},
    {"order": "informative", "next_token": _token({"ranked": GOOD_KEY | {"priority": {"N": "abc"}}})},
    {"order": "informative", "next_token": _token({"ranked": GOOD_KEY | {"priority": {"S": "0.1"}}})},
    {"order": "informative", "next_token": _token({"ranked": GOOD_KEY | {"priority": {"N": 1}}})},
    {"order": "informative", "next_token": _token({"ranked": {**GOOD_KEY, "queue": {"S": "x"}, "priority": {"N": "1"}}})},  # noqa: E501
    {"order": "informative", "next_token": _token({"ranked": GOOD_KEY | {"priority": {"N": "0.1"}, "x": {"S": "1"}}})},
    {"order": "informative", "next_token": _token({"ranked": None})},
    {"order": "informative", "next_token": _token({"elsewhere": None})},
    {"order": "informative", "next_token": _token({"ranked": GOOD_KEY, "unranked": None})},
    {"order": "informative", "next_token": _token([1, 2])},
    {"order": "informative", "next_token": _token({"unranked": GOOD_KEY | {"timestamp": {"N": "1"}}})},
    # a token of one order is not a token of the other
    {"order": "informative", "next_token": _token(GOOD_KEY | {"timestamp": {"S": "2026"}})},
    {"order": "oldest", "next_token": _token({"ranked": GOOD_KEY | {"priority": {"N": "0.1"}}})},
]  # fmt: skip


@pytest.mark.parametrize("params", HOSTILE)
def test_a_bad_order_or_token_is_a_clear_4xx(api: str, aws: LocalAws, params: dict[str, str]) -> None:
    seed_ranked(aws.store, aws.bucket, 2)
    reply = listing(api, **params)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] and ("order" in error["message"] or "next_token" in error["message"])


def test_order_belongs_to_the_queue(api: str) -> None:
    reply = requests.get(f"{api}/predictions", params={"date": NOW.date().isoformat(), "order": "oldest"}, timeout=30)
    assert reply.status_code == 422
    assert "order sorts the review queue" in reply.json()["error"]["message"]


def test_tokens_handed_out_continue(api: str, aws: LocalAws) -> None:
    # a valid token for the ranked part that names an item no longer there still continues after its place
    results = seed_ranked(aws.store, aws.bucket, 5)
    order = informative_order(results)
    first = page(api, order="informative", limit=2)
    for result_id in order[:3]:
        assert requests.patch(f"{api}/predictions/{result_id}", json={"category": "toys_games"}, timeout=30).ok
    rest = page(api, order="informative", limit=10, next_token=first["next_token"])
    assert [r["id"] for r in rest["items"]] == order[3:]


def test_the_night_summary_has_the_trend_up_to_its_day_and_skips_what_it_cannot_read(api: str, aws: LocalAws) -> None:
    day = NOW.date().isoformat()
    nights = [
        {"day": "2026-01-01", "run": "a", "photos": 10, "auto_sorted_share": 0.5, "review_rate": 0.5},
        {"day": day, "run": "b", "photos": 20, "auto_sorted_share": 0.7, "model_version": "v1", "extra": "ignored"},
        {"day": "2999-01-01", "run": "future", "photos": 1},  # after the day asked for
        {"day": day, "photos": "many"},  # not a night this version can read
        "not a night",
    ]
    aws.bucket.put_bytes("nightly-trend.json", json.dumps(nights).encode())
    summary = requests.get(f"{api}/summaries/{day}", timeout=30).json()
    assert [(n["run"], n["auto_sorted_share"]) for n in summary["trend"]] == [("a", 0.5), ("b", 0.7)]
    # a trend file that is no JSON at all is no trend, not an error
    aws.bucket.put_bytes("nightly-trend.json", b"{oops")
    reply = requests.get(f"{api}/summaries/{day}", timeout=30)
    assert reply.status_code == 200 and reply.json()["trend"] == []
