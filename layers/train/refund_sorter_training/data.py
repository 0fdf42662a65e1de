"""What training on the stack learns from: the features of ``labelled/<department>/`` photos and every reviewed
Result (a person's decision is a label), read from where the functions recorded them. Nothing is decoded here:
the labelled photos' features were recorded when they arrived (:mod:`refund_sorter.heads.labelled`), the
reviewed ones' when they were classified (:mod:`refund_sorter.heads.embeddings`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.heads.embeddings import RESULTS_FOLDER
from refund_sorter.heads.labelled import labelled_photos, read_features
from refund_sorter_training.admin import load_embeddings
from refund_sorter_training.fit import Labelled

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from refund_sorter.results import Result
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore

logger = logging.getLogger(__name__)


@dataclass
class StackData:
    """The training data, and what was left out of it and why (the job's summary reports every count)."""

    labelled: Labelled
    reviewed: Labelled
    # labelled photos whose features are not recorded (uploaded before the embed function, or unreadable)
    labelled_without_features: int = 0
    # reviewed Results whose features were never kept (classified before features were kept)
    reviewed_without_features: int = 0
    # reviews naming a department without labelled photos: department → count
    reviews_left_out: dict[str, int] = field(default_factory=dict)
    # Settings.threshold_from_labelled_only: the labelled photos alone set the threshold (fit's ``ordinary``)
    threshold_from_labelled_only: bool = False

    def hold_out(self, held: set[str]) -> tuple[StackData, Labelled]:
        """This data without the decisions whose ids are in ``held``, and those decisions on their own."""
        ids = self.reviewed.ids
        kept = [i for i, decision in enumerate(ids) if decision not in held]
        out = [i for i, decision in enumerate(ids) if decision in held]
        training = StackData(
            self.labelled,
            self.reviewed.rows(kept),
            self.labelled_without_features,
            self.reviewed_without_features,
            self.reviews_left_out,
            self.threshold_from_labelled_only,
        )
        return training, self.reviewed.rows(out)

    def combined(self) -> Labelled:
        parts = [part for part in (self.labelled, self.reviewed) if part.departments]
        labelled, reviewed = len(self.labelled.departments), len(self.reviewed.departments)
        return Labelled(
            np.concatenate([part.embeddings for part in parts]) if parts else np.zeros((0, 0), np.float16),
            self.labelled.departments + self.reviewed.departments,
            self.labelled.sources + self.reviewed.sources,
            # The labelled photos are a plain sample of the shop's photos; reviews are the ones a head was unsure
            # of. Without labelled photos there is no plain sample: the hold-out of every label sets it.
            ordinary=(
                np.concatenate([np.ones(labelled, bool), np.zeros(reviewed, bool)])
                if self.threshold_from_labelled_only and labelled
                else None
            ),
        )


def _stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, 0), np.float16)


def stack_data(bucket: PhotoBucket, store: DynamoResultStore, backbone: str) -> StackData:
    """Labelled photos (as listed now, with their recorded features) plus the reviews of their departments: only
    features by ``backbone`` (the one the functions run), never another's."""
    photos = labelled_photos(bucket)
    features = read_features(bucket, backbone, photos)
    usable = [photo for photo in photos if photo.stored.result_id in features]
    labelled = Labelled(
        _stack([features[photo.stored.result_id] for photo in usable]),
        [photo.department for photo in usable],
        [bucket.uri(photo.stored.key) for photo in usable],
    )
    if len(usable) < len(photos):
        logger.warning("%d labelled photos have no recorded features", len(photos) - len(usable))
    reviewed, without = reviewed_from_store(store, bucket, backbone)
    data = StackData(
        labelled,
        reviewed,
        len(photos) - len(usable),
        without,
        threshold_from_labelled_only=bucket.settings.threshold_from_labelled_only,
    )
    if labelled.departments:
        data.reviewed, data.reviews_left_out = only_departments(reviewed, set(labelled.departments))
    return data


def reviewed_from_store(store: DynamoResultStore, bucket: PhotoBucket, backbone: str) -> tuple[Labelled, int]:
    """Every reviewed Result as a label (the person's department), with the features by ``backbone`` kept when it
    ran; and how many reviewed Results had none kept (or only another backbone's)."""
    reviewed = [r for r in reviewed_results(store) if r.review is not None]
    days = sorted({r.day for r in reviewed})
    prefix = bucket.settings.embeddings_prefix + RESULTS_FOLDER
    kept = load_embeddings(bucket.client, bucket.name, [f"{prefix}{day}/" for day in days], backbone)
    usable = [r for r in reviewed if r.id in kept]
    return (
        Labelled(
            _stack([kept[r.id] for r in usable]),
            [r.review.department for r in usable if r.review is not None],
            [r.source for r in usable],
            ids=[r.id for r in usable],
        ),
        len(reviewed) - len(usable),
    )


def only_departments(data: Labelled, departments: set[str]) -> tuple[Labelled, dict[str, int]]:
    """Reviews naming a department that has labelled photos, and the count of the others by department.

    The others were made before this shop's departments existed (e.g. the ImageNet taxonomy's ``clothing``):
    counting them would make departments out of a few photos each, which training would then refuse."""
    keep = [i for i, department in enumerate(data.departments) if department in departments]
    left_out = Counter(d for d in data.departments if d not in departments)
    return data.rows(keep), dict(sorted(left_out.items()))


def reviewed_results(store: DynamoResultStore) -> Iterable[Result]:
    """Every Result a person decided (a filtered scan: training runs rarely, the table has no status index)."""
    pages = store.client.get_paginator("scan").paginate(
        TableName=store.table,
        FilterExpression="#status = :reviewed",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":reviewed": {"S": "reviewed"}},
    )
    for page in pages:
        yield from (store._from_item(item) for item in page["Items"])
