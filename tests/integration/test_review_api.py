"""The review loop over real HTTP and the real handler, on DynamoDB and S3 (moto): the queue, decisions as
conditional writes, undo, who decided, photos, the night summary and the page's files."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from refund_sorter.results import Result, Status
from refund_sorter.reviews import record_decision
from refund_sorter_cli.samples import photo_bytes, photo_path
from tests.handlers import call_handler
from tests.integration.conftest import LocalAws, StartApi
from tests.review_data import seed_queue

EVENTS = Path(__file__).resolve().parents[2] / "events"
NOW = datetime.now(UTC)
TODAY = NOW.date().isoformat()


@pytest.fixture
def api(start_api: StartApi) -> str:
    return start_api()


def queue(api: str, **params: Any) -> dict[str, Any]:
    reply = requests.get(f"{api}/predictions", params={"status": "needs_review", **params}, timeout=30)
    assert reply.status_code == 200, reply.text
    page: dict[str, Any] = reply.json()
    return page


def decide(api: str, result_id: str, body: dict[str, Any]) -> requests.Response:
    return requests.patch(f"{api}/predictions/{result_id}", json=body, timeout=30)


def error_code(reply: requests.Response) -> str:
    code: str = reply.json()["error"]["code"]
    return code


SAMPLE_ID = "e6391c0f79948ad0e5cd4d937c0f490f"  # the prediction the sample events name


def event(name: str, result_id: str = SAMPLE_ID) -> dict[str, Any]:
    """A sample event from events/, about ``result_id`` instead of the sample's prediction."""
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8").replace(SAMPLE_ID, result_id))
    return loaded


# ------------------------------------------------------------------------------------------------ the queue


def test_the_queue_is_oldest_first_across_days_paged_filtered_and_counted(api: str, aws: LocalAws) -> None:
    # GIVEN 3 photos waiting from yesterday night and 4 from today, and one classified automatically
    yesterday = seed_queue(aws.store, aws.bucket, 3, newest=NOW - timedelta(days=1))
    today = seed_queue(aws.store, aws.bucket, 4, newest=NOW)
    waiting = yesterday + today
    aws.store.add(waiting[0].model_copy(update={"id": "auto", "status": Status.CLASSIFIED, "review_reason": None}))
    # WHEN the page reads the queue, three at a time
    first = queue(api, limit=3)
    second = queue(api, limit=3, next_token=first["next_token"])
    third = queue(api, limit=3, next_token=second["next_token"])
    # THEN it gets every waiting photo once, oldest first across the days, and the counts on the first page
    ids = [r["id"] for page in (first, second, third) for r in page["items"]]
    assert ids == [r.id for r in waiting]
    assert third["next_token"] is None
    assert first["counts"] == {"date": TODAY, "left_today": 4, "done_today": 0, "left": 7}
    assert second["counts"] is None, "counts come with the first page only"
    assert queue(api, limit=1, counts="false")["counts"] is None, "unless the client does without them"
    # a day, and a predicted department, narrow it
    assert [r["id"] for r in queue(api, date=TODAY)["items"]] == [r.id for r in today]
    department = waiting[0].prediction
    assert department is not None
    expected = [r.id for r in waiting if r.prediction == department]
    assert [r["id"] for r in queue(api, department=department, limit=1000)["items"]] == expected
    filtered_pages = [queue(api, department=department, limit=1)]
    while filtered_pages[-1]["next_token"]:
        filtered_pages.append(queue(api, department=department, limit=1, next_token=filtered_pages[-1]["next_token"]))
    assert [p["items"][0]["id"] for p in filtered_pages if p["items"]] == expected


def test_a_decision_takes_a_photo_out_of_the_queue_and_an_undo_puts_it_back(api: str, aws: LocalAws) -> None:
    first, second = seed_queue(aws.store, aws.bucket, 2)
    assert decide(api, first.id, {"category": "toys_games", "revision": 0}).status_code == 200
    page = queue(api)
    assert [r["id"] for r in page["items"]] == [second.id]
    assert page["counts"] | {"date": TODAY} == {"date": TODAY, "left_today": 1, "done_today": 1, "left": 1}
    undone = requests.delete(f"{api}/predictions/{first.id}/review", timeout=30)
    assert undone.status_code == 200, undone.text
    assert [r["id"] for r in queue(api)["items"]] == [first.id, second.id]


def test_listing_needs_a_date_or_the_queue(api: str) -> None:
    for params, code in (({}, 422), ({"date": TODAY, "department": "toys_games"}, 422), ({"status": "failed"}, 422)):
        reply = requests.get(f"{api}/predictions", params=params, timeout=30)
        assert reply.status_code == code, (params, reply.text)
    reply = requests.get(
        f"{api}/predictions", params={"status": "needs_review", "department": "spaceships"}, timeout=30
    )
    assert reply.status_code == 422 and "spaceships" in reply.json()["error"]["message"]
    forged = requests.get(f"{api}/predictions", params={"status": "needs_review", "next_token": "abc"}, timeout=30)
    assert forged.status_code == 422


# ------------------------------------------------------------------------------------------------ decisions


def test_decide_conflict_correct_undo_and_the_export_shows_it(api: str, aws: LocalAws) -> None:
    (photo,) = seed_queue(aws.store, aws.bucket, 1)
    # the first decision (no revision: only if nobody decided yet)
    first = decide(api, photo.id, {"category": "toys_games"})
    assert first.status_code == 200, first.text
    assert (first.json()["prediction"], first.json()["department"]) == (photo.prediction, "toys_games")
    # a second reviewer who saw the photo before it was decided is told, and nothing is overwritten
    for body in ({"category": "shoes"}, {"category": "shoes", "revision": 0}):
        late = decide(api, photo.id, body)
        assert late.status_code == 409 and error_code(late) == "review_conflict", late.text
        assert "local decided toys_games" in late.json()["error"]["message"]
    # with the revision they now see, they correct it
    corrected = decide(api, photo.id, {"category": "shoes", "revision": first.json()["revision"]})
    assert corrected.status_code == 200 and corrected.json()["department"] == "shoes"
    # the export carries the model's answer, the person's department and who decided
    rows = list(csv.DictReader(io.StringIO(requests.get(f"{api}/exports/{TODAY}", timeout=30).text.lstrip("\ufeff"))))
    assert [(r["prediction"], r["department"], r["status"], r["reviewed_by"]) for r in rows] == [
        (photo.prediction, "shoes", "reviewed", "local")
    ]
    # undo twice: the correction, then the first decision; then there is nothing left to undo
    back = requests.delete(f"{api}/predictions/{photo.id}/review", timeout=30).json()
    assert (back["status"], back["department"]) == ("reviewed", "toys_games")
    back = requests.delete(f"{api}/predictions/{photo.id}/review", timeout=30).json()
    assert (back["status"], back["department"], back["review"]) == ("needs_review", None, None)
    assert [e["action"] for e in back["review_history"]] == ["decided", "decided", "undone", "undone"]
    nothing = requests.delete(f"{api}/predictions/{photo.id}/review", timeout=30)
    assert nothing.status_code == 409 and error_code(nothing) == "nothing_to_undo"


def test_a_write_over_a_revision_it_did_not_see_is_refused_by_dynamodb(aws: LocalAws) -> None:
    # GIVEN a reviewer who read the photo, and another whose decision lands first
    (photo,) = seed_queue(aws.store, aws.bucket, 1)
    store = aws.store
    seen = store.get(photo.id)
    assert seen is not None
    store.review(photo.id, "toys_games", "ana")
    # WHEN the first one's write arrives, built on what they saw
    written = store.save_review(record_decision(seen, "shoes", "ben"), revision=seen.revision)
    # THEN DynamoDB's condition refuses it and ana's decision stands
    assert written is False
    stored = store.get(photo.id)
    assert stored is not None and stored.review is not None and stored.review.by == "ana"


def test_a_decision_writes_only_the_review_fields(aws: LocalAws) -> None:
    # GIVEN a stored item with an attribute this code does not know (written by a newer job, say)
    (photo,) = seed_queue(aws.store, aws.bucket, 1)
    key = {"id": {"S": photo.id}}
    aws.dynamodb.update_item(
        TableName=aws.settings.table,
        Key=key,
        UpdateExpression="SET other_keys = :keys",
        ExpressionAttributeValues={":keys": {"SS": ["incoming/a.jpg", "processed/a.jpg"]}},
    )
    # WHEN a person decides, then undoes
    aws.store.review(photo.id, "toys_games", "ana")
    decided = aws.dynamodb.get_item(TableName=aws.settings.table, Key=key)["Item"]
    aws.store.undo_review(photo.id, "ana")
    undone = aws.dynamodb.get_item(TableName=aws.settings.table, Key=key)["Item"]
    # THEN that attribute stays, and the sparse queue attribute follows the status
    assert decided["other_keys"] == undone["other_keys"] == {"SS": ["incoming/a.jpg", "processed/a.jpg"]}
    assert "queue" not in decided and decided["status"] == {"S": "reviewed"}
    assert undone["queue"] == {"S": "needs_review"} and "review" not in undone and "department" not in undone


def test_a_failed_prediction_is_not_reviewable(api: str, aws: LocalAws) -> None:
    failed = Result(
        id="failed-photo",
        source="upload",
        status=Status.FAILED,
        model_version="m",
        error={"code": "corrupt_image", "message": "cut off"},
    )
    aws.store.add(failed)
    reply = decide(api, failed.id, {"category": "toys_games"})
    assert reply.status_code == 409 and error_code(reply) == "not_reviewable"
    assert "send the photo again" in reply.json()["error"]["message"]


def test_review_by_is_the_signed_in_reviewer_and_only_they_can_undo(aws: LocalAws) -> None:
    # GIVEN the review API's events: API Gateway's Cognito authorizer puts the ID token's claims in them
    (photo,) = seed_queue(aws.store, aws.bucket, 1)
    decided = call_handler(aws.template, "PredictFunction", event("api-review-decide.json", photo.id))
    assert decided["statusCode"] == 200, decided["body"]
    assert json.loads(decided["body"])["review"]["by"] == "reviewer@example.com"
    # WHEN someone else tries to undo it
    other = event("api-undo-review.json", photo.id)
    other["requestContext"]["authorizer"]["claims"]["email"] = "someone.else@example.com"
    refused = call_handler(aws.template, "PredictFunction", other)
    assert refused["statusCode"] == 403 and json.loads(refused["body"])["error"]["code"] == "not_your_decision"
    # THEN only the decider can
    undone = call_handler(aws.template, "PredictFunction", event("api-undo-review.json", photo.id))
    assert undone["statusCode"] == 200
    assert [(e["action"], e["by"]) for e in json.loads(undone["body"])["review_history"]] == [
        ("decided", "reviewer@example.com"),
        ("undone", "reviewer@example.com"),
    ]


def test_a_machine_client_decision_is_recorded_under_its_iam_principal(aws: LocalAws) -> None:
    (photo,) = seed_queue(aws.store, aws.bucket, 1)
    sample = event("api-patch-prediction.json", photo.id)
    reply = call_handler(aws.template, "PredictFunction", sample)
    assert reply["statusCode"] == 200, reply["body"]
    assert json.loads(reply["body"])["review"]["by"] == "arn:aws:iam::123456789012:user/returns-desk"


# ------------------------------------------------------------------------------------------------ photos


def test_the_nightly_job_keeps_a_thumbnail_and_the_photo_route_finds_both_sizes(
    api: str, aws: LocalAws, sorter: Any
) -> None:
    from refund_sorter.jobs.nightly import run_nightly

    original = photo_bytes("skimage/astronaut")
    aws.put_photo("incoming/returns/astronaut.png", original)
    run_nightly(sorter, aws.store, aws.bucket)
    (item,) = aws.items()
    result_id = item["id"]["S"]
    assert aws.keys("thumbnails/") == [f"thumbnails/{result_id}.jpg"]
    # the thumbnail, through a 303 to a short-lived link
    reply = requests.get(f"{api}/predictions/{result_id}/photo", allow_redirects=False, timeout=30)
    assert reply.status_code == 303
    assert "/thumbnails/" in reply.headers["Location"]
    thumbnail = requests.get(reply.headers["Location"], timeout=30)
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (512, 512)
    # the original, wherever the nightly job moved it
    full = requests.get(f"{api}/predictions/{result_id}/photo", params={"size": "full", "as": "json"}, timeout=30)
    assert full.status_code == 200 and full.json()["size"] == "full"
    assert "/processed/returns/astronaut.png" in full.json()["url"]
    assert requests.get(full.json()["url"], timeout=30).content == original


def test_a_photo_sent_to_the_api_is_viewable(api: str, aws: LocalAws) -> None:
    sent = requests.post(
        f"{api}/predictions",
        json={"image_base64": base64.b64encode(photo_bytes("skimage/coffee")).decode()},
        timeout=30,
    )
    assert sent.status_code == 201
    result_id = sent.json()["id"]
    # the thumbnail, and the original the API kept under uploads/ (as it was sent: a PNG)
    for size, kind, side in (
        ("thumbnail", "JPEG", 512),
        ("full", "PNG", max(Image.open(photo_path("skimage/coffee")).size)),
    ):
        link = requests.get(f"{api}/predictions/{result_id}/photo", params={"size": size, "as": "json"}, timeout=30)
        assert link.status_code == 200, link.text
        picture = Image.open(io.BytesIO(requests.get(link.json()["url"], timeout=30).content))
        assert picture.format == kind and max(picture.size) == side


def test_no_photo_is_a_clear_404(api: str, aws: LocalAws) -> None:
    (photo,) = seed_queue(aws.store, aws.bucket, 1)
    aws.s3.delete_object(Bucket=aws.settings.bucket, Key=aws.bucket.thumbnail_key(photo.id))
    reply = requests.get(f"{api}/predictions/{photo.id}/photo", timeout=30)
    assert reply.status_code == 404 and "no photo is kept" in reply.json()["error"]["message"]
    assert requests.get(f"{api}/predictions/nope/photo", timeout=30).status_code == 404


# ------------------------------------------------------------------------------------------------ summary, page


def test_the_night_summary(api: str, aws: LocalAws) -> None:
    first, _second = seed_queue(aws.store, aws.bucket, 2)
    decide(api, first.id, {"category": "toys_games"})
    summary = requests.get(f"{api}/summaries/{TODAY}", timeout=30).json()
    assert summary["total"] == 2 and summary["by_status"] == {"reviewed": 1, "needs_review": 1}
    assert summary["asked"] == 2 and summary["review_rate"] == 1.0 and summary["reviewers"] == {"local": 1}
    assert len(summary["confidence_histogram"]) == 10


def test_the_page_and_its_files_come_from_the_api(api: str, aws: LocalAws) -> None:
    page = requests.get(f"{api}/review", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script id="sign-in-config" type="application/json">{}</script>' in page.text, "local: no sign-in"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and f"img-src 'self' blob: data: {aws.endpoint}" in policy
    assert "connect-src 'self';" in policy
    for name, media_type in (
        ("review.js", "text/javascript"),
        ("sign-in.js", "text/javascript"),
        ("review.css", "text/css"),
    ):
        asset = requests.get(f"{api}/review/{name}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type), name
    assert requests.get(f"{api}/review/secrets.txt", timeout=30).status_code == 404
    # nothing on the page comes from elsewhere: every script, style and link is relative to the API
    for source in [
        page.text,
        *(requests.get(f"{api}/review/{n}", timeout=30).text for n in ("review.js", "summary.js")),
    ]:
        text = source.replace('"http://www.w3.org/2000/svg"', "")  # an XML namespace name, never fetched
        assert "http://" not in text and "https://" not in text


def test_in_aws_the_page_names_the_sign_in_service_from_the_stage(aws: LocalAws) -> None:
    reply = call_handler(aws.template, "PredictFunction", event("api-review-page.json"))
    assert reply["statusCode"] == 200
    config = json.loads(reply["body"].split('type="application/json">', 1)[1].split("</script>", 1)[0])
    sign_in = "https://refund-sorter-123456789012.auth.us-east-1.amazoncognito.com"
    assert config == {
        "authorize_url": f"{sign_in}/oauth2/authorize",
        "token_url": f"{sign_in}/oauth2/token",
        "logout_url": f"{sign_in}/logout",
        "client_id": "3n4b5m6v7c8x9z0l1k2j3h4g5f",
        "scope": "openid email profile",
    }
    assert f"connect-src 'self' {sign_in}" in reply["multiValueHeaders"]["Content-Security-Policy"][0]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("api-review-queue.json", 200),
        ("api-get-summary.json", 200),
        ("api-review-asset.json", 200),
        ("api-get-photo.json", 404),  # the sample's prediction does not exist on a fresh stack
        ("api-undo-review.json", 404),
    ],
)
def test_sample_events_of_the_review_routes(aws: LocalAws, name: str, status: int) -> None:
    assert call_handler(aws.template, "PredictFunction", event(name))["statusCode"] == status
