"""Labelled photos (``labelled/<department>/...``) and their features, recorded once, when a photo arrives.

Training needs the backbone's 1280-d features of every labelled photo. Decoding photos and running the model
needs onnxruntime and Pillow, which the training function does not have (its layer is scikit-learn's), so the
features are recorded by the embed function (model layer) when a photo lands under ``labelled/`` (S3
ObjectCreated), and training only reads them.

One object per photo version: ``embeddings/labelled/<id>.npz``, where ``<id>`` is the photo's
:attr:`~refund_sorter.storage.bucket.StoredPhoto.result_id` (bucket + key + ETag). So:

- a replaced photo (same key, new content) has a new id: it is embedded again, and the old features are no
  longer used (nothing lists a photo with the old ETag);
- a deleted photo drops out: training joins the features on the photos listed under ``labelled/`` *now*;
- which photos still lack features is a listing of two prefixes, no reads (photos uploaded before the embed
  function existed, or whose event failed): :func:`missing` finds them and :func:`embed_labelled` catches up.

The file is the format of :mod:`.embeddings` (``ids`` + ``embeddings`` as float16), read with
``allow_pickle=False``. No Result is created for a labelled photo: it is training data, not an item to sort.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.heads.embeddings import LABELLED_FOLDER, from_bytes, to_bytes
from refund_sorter.storage.bucket import StoredPhoto

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from refund_sorter.config import Settings
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.vision.sorter import Sorter

logger = logging.getLogger(__name__)

# A department is a folder name and an id in the API: keep it to what reads well in both.
DEPARTMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Parallel GETs when training reads one small object per photo (S3 answers each in ~10-30 ms).
READ_THREADS = 16


@dataclass(frozen=True)
class LabelledPhoto:
    """A photo under ``labelled/<department>/`` as it is now."""

    department: str
    stored: StoredPhoto


def department_of(key: str, prefix: str) -> str | None:
    """``labelled/<department>/<name>`` → the department (``None``: not a labelled photo's key)."""
    if not key.startswith(prefix):
        return None
    department, _, name = key[len(prefix) :].partition("/")
    if not name or name.endswith("/") or not DEPARTMENT_NAME.match(department):
        return None
    return department


def features_prefix(bucket: PhotoBucket) -> str:
    return bucket.settings.embeddings_prefix + LABELLED_FOLDER


def features_key(bucket: PhotoBucket, stored: StoredPhoto) -> str:
    return f"{features_prefix(bucket)}{stored.result_id}.npz"


def _keys(bucket: PhotoBucket, prefix: str) -> Iterable[tuple[str, str, int]]:
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"], obj["ETag"].strip('"'), obj["Size"]


def labelled_photos(bucket: PhotoBucket) -> list[LabelledPhoto]:
    """Every photo under ``labelled/<department>/`` now (other keys there are ignored)."""
    prefix = bucket.settings.labelled_prefix
    found = []
    for key, etag, size in _keys(bucket, prefix):
        department = department_of(key, prefix)
        if department is not None:
            found.append(LabelledPhoto(department, StoredPhoto(key, etag, size)))
    return found


def recorded_ids(bucket: PhotoBucket) -> set[str]:
    """The photo versions whose features are recorded (from the key names alone: a listing, no reads)."""
    prefix = features_prefix(bucket)
    return {key[len(prefix) : -len(".npz")] for key, _, _ in _keys(bucket, prefix) if key.endswith(".npz")}


def missing(bucket: PhotoBucket) -> list[LabelledPhoto]:
    """Labelled photos whose features are not recorded yet."""
    have = recorded_ids(bucket)
    return [photo for photo in labelled_photos(bucket) if photo.stored.result_id not in have]


def read_features(bucket: PhotoBucket, photos: list[LabelledPhoto]) -> dict[str, np.ndarray]:
    """``photo version id → float16 features`` of the given photos (those recorded; one GET each, in parallel)."""
    wanted = recorded_ids(bucket) & {photo.stored.result_id for photo in photos}

    def read(photo_id: str) -> dict[str, np.ndarray]:
        body = bucket.client.get_object(Bucket=bucket.name, Key=f"{features_prefix(bucket)}{photo_id}.npz")["Body"]
        return from_bytes(body.read())

    found: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for part in pool.map(read, sorted(wanted)):
            found |= part
    return found


@dataclass
class EmbedReport:
    """What :func:`embed_labelled` did: photos embedded, photos that could not be read (key → why), and
    photos it had no time left for."""

    embedded: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    remaining: int = 0
    milliseconds_per_photo: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "embedded": self.embedded,
            "failed": self.failed,
            "remaining": self.remaining,
            "milliseconds_per_photo": self.milliseconds_per_photo,
        }


def embed_labelled(
    sorter: Sorter,
    bucket: PhotoBucket,
    photos: Iterable[StoredPhoto],
    *,
    seconds_left: Callable[[], float] = lambda: float("inf"),
    chunk: int = 16,
) -> EmbedReport:
    """Record the features of these labelled photo versions (one object each), chunk by chunk.

    ``sorter`` should apply no head (:func:`backbone_sorter`): the features are the backbone's whatever is
    active. A photo that cannot be read is reported, never fatal; one replaced meanwhile (its ETag no longer
    matches) is skipped, as its new version brings its own event. Stops taking chunks when
    ``seconds_left()`` drops under the settings' ``batch_safety_seconds``; what is left is counted.
    """
    import time

    todo = list(photos)
    report = EmbedReport()
    started = time.perf_counter()
    position = 0
    while position < len(todo) and seconds_left() > bucket.settings.batch_safety_seconds:
        batch = todo[position : position + chunk]
        position += len(batch)
        by_id = {stored.result_id: stored for stored in batch}
        for outcome in sorter.classify(bucket.photo(stored) for stored in batch):
            stored = by_id[outcome.photo.id]
            if outcome.embedding is None:
                why = outcome.result.error.code if outcome.result and outcome.result.error else "not readable now"
                report.failed[stored.key] = str(why)
                logger.warning("no features for %s: %s", bucket.uri(stored.key), why)
                continue
            body = to_bytes([stored.result_id], outcome.embedding[np.newaxis, :])
            bucket.client.put_object(Bucket=bucket.name, Key=features_key(bucket, stored), Body=body)
            report.embedded += 1
    report.remaining = len(todo) - position
    if report.embedded:
        report.milliseconds_per_photo = round((time.perf_counter() - started) * 1000 / report.embedded, 1)
    return report


def backbone_sorter(settings: Settings) -> Sorter:
    """A Sorter that never applies a head (so never reads the ACTIVE pointer): training learns on the backbone's
    features (and measures ImageNet's not-a-product gate), whatever head is active."""
    from refund_sorter.heads.active import FixedHead
    from refund_sorter.vision.sorter import Sorter

    return Sorter(settings, heads=FixedHead(None))
