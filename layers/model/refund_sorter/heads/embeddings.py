"""Every classified photo's features, kept so that training never decodes a photo twice.

Each run (a nightly batch, a fan-out worker's chunk, one API prediction) writes ONE object,
``embeddings/results/<day>/<run>.npz``: the Result ids and their features as ``float16[N, 1280]`` (2.5 KB a
photo). Training finds a reviewed Result's features under its day.

Why a file per run in S3 and not a Binary attribute on the Result's DynamoDB item (us-east-1 list prices):

- DynamoDB bills writes per started KB: a Result is ~1 KB, with 2.6 KB of features ~4 KB, so +3 write units
  per photo, and again in the ``by-day`` index (it projects ALL attributes): ~+6 WRU = ~$3.75 per million
  photos, stored twice at $0.25/GB-month (~$1.3/month per million photos, growing), and every listing,
  export and review rewrite reads or writes the bigger item (Query is billed per 4 KB read).
- S3: one PUT per run ($0.005 per 1,000 PUTs; a nightly run of 10,000 photos costs $0.000005 for its
  25 MB file), storage at $0.023/GB-month, nothing added to the Result item, the API or the CSV. An API
  prediction is a run of one (one PUT, $5 per million predictions: the interactive path is the small one).

The file is plain ``np.savez`` (``ids`` as unicode, ``embeddings`` as float16, ``backbone``: the model version
whose features they are), read with ``allow_pickle=False``. Features of one backbone mean nothing to a head of
another: readers ask for their backbone's and get nothing from a file of another (:func:`from_bytes`), so a new
backbone never trains on an old one's features; the photos are embedded again instead
(:mod:`refund_sorter.jobs.embed_labelled`).
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.results import utc_now

if TYPE_CHECKING:
    from refund_sorter.storage.bucket import PhotoBucket

logger = logging.getLogger(__name__)

RESULTS_FOLDER = "results/"
LABELLED_FOLDER = "labelled/"
EMBEDDING_DTYPE = np.float16
# Files written before the backbone was recorded in them came from the only backbone there was then.
UNRECORDED_BACKBONE = "efficientnet-lite0-b36a82426b51"


def compact(embedding: np.ndarray) -> np.ndarray:
    """The stored form of a feature vector: float16 (the head is applied to exactly this, see the Sorter)."""
    return np.asarray(embedding, dtype=EMBEDDING_DTYPE)


class EmbeddingLog:
    """Collects one run's ``(result id, features)`` and writes them as one S3 object on :meth:`flush`.

    Thread-safe: the nightly loop records from its storing threads.

    Parameters
    ----------
    bucket
        The images bucket (its ``settings.embeddings_prefix`` says where).
    backbone
        The version of the model whose features these are (``Classifier.info.version``), written into the file.
    folder
        ``results/<day>/`` for classified photos (the default, today), ``labelled/`` for training photos.
    """

    def __init__(self, bucket: PhotoBucket, backbone: str, folder: str | None = None) -> None:
        self.bucket = bucket
        self.backbone = backbone
        self.folder = folder or f"{RESULTS_FOLDER}{utc_now().date().isoformat()}/"
        self._ids: list[str] = []
        self._rows: list[np.ndarray] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def record(self, result_id: str, embedding: np.ndarray | None) -> None:
        """Keep one photo's features (``None``, e.g. a failed photo: nothing to keep)."""
        if embedding is None:
            return
        with self._lock:
            self._ids.append(result_id)
            self._rows.append(compact(embedding))

    def flush(self) -> str | None:
        """Write what was recorded since the last flush as one object; returns its key (``None``: nothing).

        Never raises for S3 trouble: the features are a cache for training (a reviewed photo without them is
        decoded again then), and losing them must not fail a night's sorting.
        """
        with self._lock:
            ids, rows = self._ids, self._rows
            self._ids, self._rows = [], []
        if not ids:
            return None
        key = f"{self.bucket.settings.embeddings_prefix}{self.folder}{uuid.uuid4().hex}.npz"
        try:
            self.bucket.put_bytes(key, to_bytes(ids, np.stack(rows), self.backbone), "application/octet-stream")
        except Exception as exc:  # noqa: BLE001 - see the docstring: a cache must not fail the run
            logger.warning("could not keep the features of %d photos (%s): %r", len(ids), key, exc)
            return None
        return key


def to_bytes(ids: list[str], embeddings: np.ndarray, backbone: str) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), embeddings=compact(embeddings), backbone=np.array(backbone))
    return buffer.getvalue()


def from_bytes(data: bytes, backbone: str | None = None) -> dict[str, np.ndarray]:
    """``id → features`` of a file; with ``backbone``, nothing unless the file's features are that backbone's."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        found = str(arrays["backbone"]) if "backbone" in arrays.files else UNRECORDED_BACKBONE
        if backbone is not None and found != backbone:
            return {}
        return dict(zip(arrays["ids"].tolist(), arrays["embeddings"], strict=True))


def keep_one(bucket: PhotoBucket, backbone: str, result_id: str, embedding: np.ndarray | None) -> str | None:
    """One photo's features as a run of one (an API prediction); returns the key written, if any."""
    log = EmbeddingLog(bucket, backbone)
    log.record(result_id, embedding)
    return log.flush()
