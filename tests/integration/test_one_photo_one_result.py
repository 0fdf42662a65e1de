"""One photo, one Result (design.md §8): a Result names where its photo is now, and the photo asked for by any
key it has had (incoming/, processed/, failed/, uploads/) answers with that Result, never a second one."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests

from refund_sorter.jobs.nightly import run_nightly
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.samples import photo_bytes, photo_path
from tests.integration.conftest import LocalAws
from tests.integration.test_api import post

CORRUPT_JPEG = b"\xff\xd8\xff\xe0 truncated"


def result_of(aws: LocalAws, result_id: str) -> dict[str, Any]:
    result = aws.store.get(result_id)
    assert result is not None
    return result.model_dump(mode="json")


def metadata(aws: LocalAws, key: str) -> dict[str, Any]:
    return dict(aws.s3.head_object(Bucket=aws.settings.bucket, Key=key))


def test_the_nightly_result_names_where_the_photo_is_and_every_key_finds_it(
    api: str,
    aws: LocalAws,
    sorter: Sorter,
) -> None:
    # GIVEN a good photo (with a content type and the uploader's own metadata) and a corrupt one in incoming/
    bucket = aws.settings.bucket
    aws.s3.put_object(
        Bucket=bucket,
        Key="incoming/desk-3/coffee.png",
        Body=photo_bytes("skimage/coffee"),
        ContentType="image/png",
        Metadata={"shot-by": "desk-3"},
    )
    aws.put_photo("incoming/desk-3/broken.jpg", CORRUPT_JPEG)
    # WHEN the nightly job runs
    report = run_nightly(sorter, aws.store, aws.bucket)
    assert report.processed == 2 and aws.keys("incoming/") == []
    # THEN each Result names the copy that exists now, and the copy names its Result
    by_key = {item["photo_key"]["S"]: item["id"]["S"] for item in aws.items()}
    assert set(by_key) == {"processed/desk-3/coffee.png", "failed/desk-3/broken.jpg"}
    coffee_id, broken_id = by_key["processed/desk-3/coffee.png"], by_key["failed/desk-3/broken.jpg"]
    assert result_of(aws, coffee_id)["source"] == f"s3://{bucket}/processed/desk-3/coffee.png"
    assert result_of(aws, broken_id)["source"] == f"s3://{bucket}/failed/desk-3/broken.jpg"
    coffee_copy = metadata(aws, "processed/desk-3/coffee.png")
    assert coffee_copy["Metadata"] == {"result-id": coffee_id, "shot-by": "desk-3"}
    assert coffee_copy["ContentType"] == "image/png"  # replacing the metadata kept what the uploader set
    broken_copy = metadata(aws, "failed/desk-3/broken.jpg")
    assert broken_copy["Metadata"]["result-id"] == broken_id
    assert broken_copy["Metadata"]["error-code"] == "corrupt_image"
    # WHEN the photo is asked for by any key it has had THEN it is the one Result (200, not a new 201)
    for key in (
        "incoming/desk-3/coffee.png",  # gone: found where the nightly job moved it
        "processed/desk-3/coffee.png",
        f"s3://{bucket}/processed/desk-3/coffee.png",
    ):
        again = post(api, {"s3_key": key})
        assert again.status_code == 200, (key, again.text)
        assert again.json()["id"] == coffee_id
        assert again.json()["photo_key"] == "processed/desk-3/coffee.png"
    failed = post(api, {"s3_key": "incoming/desk-3/broken.jpg"})
    assert failed.status_code == 200, failed.text
    assert (failed.json()["id"], failed.json()["status"]) == (broken_id, "failed")
    assert len(aws.items()) == 2


def test_a_photo_classified_through_the_api_is_followed_when_the_nightly_moves_it(
    api: str,
    aws: LocalAws,
    sorter: Sorter,
) -> None:
    aws.put_photo("incoming/chelsea.png", photo_bytes("skimage/chelsea"))
    created = post(api, {"s3_key": "incoming/chelsea.png"})
    assert created.status_code == 201, created.text
    assert created.json()["photo_key"] == "incoming/chelsea.png"
    # the nightly finds the Result made through the API and moves the photo without classifying it again
    report = run_nightly(sorter, aws.store, aws.bucket)
    assert (report.already_done, report.processed) == (1, 0)
    moved = result_of(aws, created.json()["id"])
    assert moved["photo_key"] == "processed/chelsea.png"
    assert moved["source"] == f"s3://{aws.settings.bucket}/processed/chelsea.png"
    assert {k: v for k, v in moved.items() if k not in {"photo_key", "source"}} == {
        k: v for k, v in created.json().items() if k not in {"photo_key", "source"}
    }
    for key in ("incoming/chelsea.png", "processed/chelsea.png"):
        again = post(api, {"s3_key": key})
        assert (again.status_code, again.json()["id"]) == (200, created.json()["id"])
    assert len(aws.items()) == 1


def test_a_photo_archived_before_copies_named_their_result_still_finds_it(
    api: str,
    aws: LocalAws,
) -> None:
    # GIVEN a Result made for incoming/old.png, and the photo moved the way older versions did (no result-id)
    bucket = aws.settings.bucket
    aws.put_photo("incoming/old.png", photo_bytes("skimage/coffee"))
    created = post(api, {"s3_key": "incoming/old.png"})
    assert created.status_code == 201, created.text
    aws.s3.copy_object(Bucket=bucket, Key="processed/old.png", CopySource={"Bucket": bucket, "Key": "incoming/old.png"})
    aws.s3.delete_object(Bucket=bucket, Key="incoming/old.png")
    assert "result-id" not in metadata(aws, "processed/old.png")["Metadata"]
    # WHEN it is asked for by either key THEN its Result is found from the key it had and the ETag it kept
    for key in ("processed/old.png", "incoming/old.png"):
        again = post(api, {"s3_key": key})
        assert (again.status_code, again.json()["id"]) == (200, created.json()["id"]), key
    assert len(aws.items()) == 1


def test_a_result_id_in_the_metadata_of_a_photo_in_incoming_is_not_believed(
    api: str,
    aws: LocalAws,
) -> None:
    # GIVEN someone's Result, and another photo dropped into incoming/ whose metadata claims that Result
    aws.put_photo("incoming/theirs.png", photo_bytes("skimage/coffee"))
    theirs = post(api, {"s3_key": "incoming/theirs.png"}).json()
    aws.s3.put_object(
        Bucket=aws.settings.bucket,
        Key="incoming/mine.png",
        Body=photo_bytes("skimage/chelsea"),
        Metadata={"result-id": theirs["id"]},
    )
    # WHEN it is asked for THEN it gets a Result of its own (only what this package wrote is believed)
    mine = post(api, {"s3_key": "incoming/mine.png"})
    assert mine.status_code == 201, mine.text
    assert mine.json()["id"] != theirs["id"] and "cat" in mine.json()["label"]


def test_a_photo_sent_as_bytes_is_kept_under_uploads(api: str, aws: LocalAws) -> None:
    sent = photo_bytes("skimage/chelsea")
    created = post(api, {"image_base64": base64.b64encode(sent).decode()})
    assert created.status_code == 201, created.text
    result = created.json()
    key = f"uploads/{result['id']}.png"
    assert result["photo_key"] == key
    assert result["source"] == f"s3://{aws.settings.bucket}/{key}"
    kept = aws.s3.get_object(Bucket=aws.settings.bucket, Key=key)
    assert kept["Body"].read() == sent
    assert kept["ContentType"] == "image/png"
    assert kept["Metadata"] == {"result-id": result["id"]}
    # the kept photo is the same photo: asking for it by its key is its Result
    again = post(api, {"s3_key": key})
    assert (again.status_code, again.json()["id"]) == (200, result["id"])
    assert len(aws.items()) == 1


def test_a_photo_fetched_from_a_url_is_kept_under_uploads_and_keeps_its_url(
    api: str,
    aws: LocalAws,
    photo_server: str,
) -> None:
    url = f"{photo_server}/coffee.png"
    created = post(api, {"url": url})
    assert created.status_code == 201, created.text
    result = created.json()
    assert result["source"] == url
    assert result["photo_key"] == f"uploads/{result['id']}.png"
    kept = aws.s3.get_object(Bucket=aws.settings.bucket, Key=result["photo_key"])["Body"].read()
    assert kept == photo_path("skimage/coffee").read_bytes()


def test_a_refused_photo_is_not_kept(api: str, aws: LocalAws) -> None:
    refused = post(api, {"image_base64": base64.b64encode(CORRUPT_JPEG).decode()})
    assert refused.status_code == 422, refused.text
    assert aws.keys("uploads/") == [] and aws.items() == []


@pytest.mark.parametrize(
    ("s3_key", "status", "says"),
    [
        ("s3://someone-elses-bucket/incoming/x.jpg", 422, "someone-elses-bucket"),
        ("s3://{bucket}", 422, "must name an object"),
        ("s3://{bucket}/", 422, "must name an object"),
        ("exports/2026-11-25.csv", 422, "incoming/, processed/, failed/, uploads/"),
        ("s3://{bucket}/incoming/nope.jpg", 404, "processed/nope.jpg or failed/nope.jpg"),
        ("processed/nope.jpg", 404, "processed/nope.jpg"),
    ],
)
def test_s3_keys_that_name_no_photo_of_ours_are_refused_clearly(
    api: str,
    aws: LocalAws,
    s3_key: str,
    status: int,
    says: str,
) -> None:
    reply = post(api, {"s3_key": s3_key.format(bucket=aws.settings.bucket)})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == ("not_found" if status == 404 else "invalid_request")
    assert says in error["message"]


def test_an_s3_uri_of_our_bucket_is_the_key(api: str, aws: LocalAws) -> None:
    aws.put_photo("incoming/by-uri.png", photo_bytes("skimage/coffee"))
    by_uri = post(api, {"s3_key": f"s3://{aws.settings.bucket}/incoming/by-uri.png"})
    assert by_uri.status_code == 201, by_uri.text
    by_key = post(api, {"s3_key": "incoming/by-uri.png"})
    assert (by_key.status_code, by_key.json()["id"]) == (200, by_uri.json()["id"])
    assert requests.get(f"{api}/predictions/{by_uri.json()['id']}", timeout=10).json()["photo_key"] == (
        "incoming/by-uri.png"
    )
