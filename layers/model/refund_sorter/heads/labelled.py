"""Labelled photos (``labelled/<department>/...``) and their features, recorded once, when a photo arrives.

Training needs the backbone's 1280-d features of every labelled photo. Decoding photos and running the model
needs onnxruntime and Pillow, which the training function does not have (its layer is scikit-learn's), so the
features are recorded by the embed function (model layer) when a photo lands under ``labelled/`` (S3
ObjectCreated), and training only reads them.

One object per photo version and backbone: ``embeddings/labelled/<backbone>/<id>.npz``, where ``<backbone>`` is
the model version whose features they are and ``<id>`` the photo's
:attr:`~refund_sorter.storage.bucket.StoredPhoto.result_id` (bucket + key + ETag). So:

- a replaced photo (same key, new content) has a new id: it is embedded again, and the old features are no
  longer used (nothing lists a photo with the old ETag);
- a deleted photo drops out: training joins the features on the photos listed under ``labelled/`` *now*;
- a new backbone finds every photo without its features, and the embed job embeds them all again (features of
  two backbones are never mixed: a head learns from one backbone's only);
- which photos still lack features is a listing of two prefixes, no reads (photos uploaded before the embed
  function existed, or whose event failed): :func:`missing` finds them and
  :func:`refund_sorter.jobs.embed_labelled.embed_labelled` catches up (embedding is a job: this module only
  lists photos and reads and names their features, so it never needs the model).

The file is the format of :mod:`.embeddings` (``ids`` + ``embeddings`` as float16), read with
``allow_pickle=False``. No Result is created for a labelled photo: it is training data, not an item to sort.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refund_sorter.heads.embeddings import LABELLED_FOLDER, from_bytes
from refund_sorter.storage.bucket import StoredPhoto

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from refund_sorter.storage.bucket import PhotoBucket

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


def features_prefix(bucket: PhotoBucket, backbone: str) -> str:
    return f"{bucket.settings.embeddings_prefix}{LABELLED_FOLDER}{backbone}/"


def features_key(bucket: PhotoBucket, backbone: str, stored: StoredPhoto) -> str:
    return f"{features_prefix(bucket, backbone)}{stored.result_id}.npz"


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


def recorded_ids(bucket: PhotoBucket, backbone: str) -> set[str]:
    """The photo versions whose features by ``backbone`` are recorded (from the key names alone: a listing)."""
    prefix = features_prefix(bucket, backbone)
    return {key[len(prefix) : -len(".npz")] for key, _, _ in _keys(bucket, prefix) if key.endswith(".npz")}


def missing(bucket: PhotoBucket, backbone: str) -> list[LabelledPhoto]:
    """Labelled photos whose features by ``backbone`` are not recorded yet."""
    have = recorded_ids(bucket, backbone)
    return [photo for photo in labelled_photos(bucket) if photo.stored.result_id not in have]


def read_features(bucket: PhotoBucket, backbone: str, photos: list[LabelledPhoto]) -> dict[str, np.ndarray]:
    """``photo version id → float16 features`` by ``backbone`` of the given photos (those recorded; one GET each,
    in parallel)."""
    wanted = recorded_ids(bucket, backbone) & {photo.stored.result_id for photo in photos}
    prefix = features_prefix(bucket, backbone)

    def read(photo_id: str) -> dict[str, np.ndarray]:
        body = bucket.client.get_object(Bucket=bucket.name, Key=f"{prefix}{photo_id}.npz")["Body"]
        return from_bytes(body.read(), backbone)

    found: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for part in pool.map(read, sorted(wanted)):
            found |= part
    return found
