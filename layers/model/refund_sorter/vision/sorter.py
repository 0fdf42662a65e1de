"""Photos in, Results out: the one path every entry point (CLI, API, nightly batch) goes through.

source bytes → :func:`~refund_sorter.images.load_image` → :class:`~refund_sorter.classifier.Classifier`
→ :class:`~refund_sorter.taxonomy.Taxonomy` → :class:`~refund_sorter.results.Result`.

Reading and decoding run on a small thread pool (S3 reads wait on the network; Pillow and onnxruntime
release the GIL), while the calling thread runs inference a batch at a time, so download, decode and
inference overlap. At most ``2 × batch_size`` photos are in flight, so memory stays bounded however many
photos the iterable yields.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.config import Settings, get_settings
from refund_sorter.errors import RefundSorterError
from refund_sorter.photos import Photo  # noqa: TC001 - a dataclass field type
from refund_sorter.results import DepartmentScore, LabelScore, Result, Status, decide
from refund_sorter.vision.classifier import Classifier
from refund_sorter.vision.taxonomy import Taxonomy

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from refund_sorter.vision.images import DecodedPhoto

logger = logging.getLogger(__name__)

# Departments a Result lists as a reviewer's first choices (the review page's keys 1-9).
TOP_DEPARTMENTS = 9


@dataclass(frozen=True)
class Outcome:
    """What became of a photo. ``result`` is ``None`` only when reading failed for a reason that may pass
    (throttling, a network error): the photo is left where it is for the next run."""

    photo: Photo
    result: Result | None
    transient_error: Exception | None = None
    thumbnail: bytes | None = None  # the reviewer's JPEG, from the decode the model used (classify(thumbnails=True))


class Sorter:
    """Classifies photos into refund departments."""

    def __init__(self, settings: Settings, classifier: Classifier | None = None, taxonomy: Taxonomy | None = None):
        self.settings = settings
        self.classifier = classifier or Classifier(settings.model_path, settings.intra_op_threads)
        self.taxonomy = taxonomy or Taxonomy.load(settings.model_path.parent)
        self.workers = min(8, (os.cpu_count() or 1) * 2)

    @property
    def model_version(self) -> str:
        return self.classifier.info.version

    def classify_one(self, photo: Photo) -> Result:
        """Classify one photo now (the API). Unlike :meth:`classify`, a photo we cannot read or decode raises
        its :class:`~refund_sorter.errors.RefundSorterError`: the caller answers the client with it."""
        return self._classified([photo], [self._decode(photo.read()).crop])[0]

    def classify_one_with_thumbnail(self, photo: Photo) -> tuple[Result, bytes | None]:
        """:meth:`classify_one`, and the reviewer's thumbnail made from the same decode (the API stores both)."""
        decoded = self._decode(photo.read(), thumbnail=True)
        return self._classified([photo], [decoded.crop])[0], decoded.thumbnail

    def classify(self, photos: Iterable[Photo], *, thumbnails: bool = False) -> Iterator[Outcome]:
        """Classify many photos in batches, yielding one Outcome per photo in input order (with its thumbnail when
        ``thumbnails``: the jobs that store Results keep one for the review page)."""
        batch_size = self.settings.batch_size
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            in_flight: deque[tuple[Photo, Future[DecodedPhoto]]] = deque()
            source = iter(photos)

            def top_up() -> None:
                while len(in_flight) < 2 * batch_size and (photo := next(source, None)) is not None:
                    in_flight.append((photo, pool.submit(self._read_and_decode, photo, thumbnails)))

            top_up()
            while in_flight:
                chunk = [in_flight.popleft() for _ in range(min(batch_size, len(in_flight)))]
                top_up()  # keep the workers busy while this chunk runs through the model
                yield from self._classify_chunk(chunk)

    def _classify_chunk(self, chunk: list[tuple[Photo, Future[DecodedPhoto]]]) -> Iterator[Outcome]:
        outcomes: list[Outcome | None] = []
        ready: list[tuple[int, Photo, DecodedPhoto]] = []
        for photo, future in chunk:
            try:
                ready.append((len(outcomes), photo, future.result()))
                outcomes.append(None)
            except RefundSorterError as exc:
                outcomes.append(Outcome(photo, self.failed_result(photo, exc)))
            except Exception as exc:  # noqa: BLE001 - the read's own error (S3, network): retry next run
                logger.warning("could not read %s, leaving it for the next run: %r", photo.source, exc)
                outcomes.append(Outcome(photo, None, exc))
        if ready:
            results = self._classified([p for _, p, _ in ready], [d.crop for _, _, d in ready])
            for (position, photo, decoded), result in zip(ready, results, strict=True):
                outcomes[position] = Outcome(photo, result, thumbnail=decoded.thumbnail)
        yield from (o for o in outcomes if o is not None)

    def _read_and_decode(self, photo: Photo, thumbnail: bool = False) -> DecodedPhoto:
        return self._decode(photo.read(), thumbnail)

    def _decode(self, data: bytes, thumbnail: bool = False) -> DecodedPhoto:
        # Imported on first use (Pillow, ~20 ms): the API's routes that never classify don't pay for it.
        from refund_sorter.vision.images import decode_photo

        return decode_photo(
            data,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            thumbnail_side=self.settings.thumbnail_side if thumbnail else 0,
        )

    def failed_result(self, photo: Photo, error: RefundSorterError) -> Result:
        """The `failed` Result for a photo we could not read or decode."""
        return Result.from_error(id=photo.id, source=photo.source, error=error, model_version=self.model_version)

    def _classified(self, photos: list[Photo], crops: list[np.ndarray]) -> list[Result]:
        from refund_sorter.vision.images import to_model_input

        class_probs = self.classifier.probabilities(to_model_input(crops))
        department_probs = self.taxonomy.department_probabilities(class_probs)
        labels = self.taxonomy.labels
        departments = self.taxonomy.department_ids
        top_k = self.settings.top_k
        results = []
        for photo, probs, dept_probs in zip(photos, class_probs, department_probs, strict=True):
            best = np.argsort(probs)[::-1][:top_k]
            best_departments = np.argsort(dept_probs)[::-1][:TOP_DEPARTMENTS]
            department = departments[int(best_departments[0])]
            confidence = _probability(dept_probs[best_departments[0]])
            status, reason = decide(department, confidence, self.settings.confidence_threshold)
            results.append(
                Result(
                    id=photo.id,
                    source=photo.source,
                    status=status,
                    review_reason=reason,
                    department=department if status is Status.CLASSIFIED else None,
                    prediction=department,
                    confidence=confidence,
                    label=labels[best[0]],
                    label_confidence=_probability(probs[best[0]]),
                    top_k=[LabelScore(label=labels[i], confidence=_probability(probs[i])) for i in best],
                    top_departments=[
                        DepartmentScore(department=departments[i], confidence=_probability(dept_probs[i]))
                        for i in best_departments
                    ],
                    model_version=self.model_version,
                )
            )
        return results


def _probability(value: np.floating | float) -> float:
    # Six decimals: float32 noise beyond that only makes CSVs and API bodies harder to read.
    return min(1.0, max(0.0, round(float(value), 6)))


@lru_cache(maxsize=1)
def get_sorter() -> Sorter:
    """The process-wide Sorter (and so one onnxruntime session), built on first use."""
    return Sorter(get_settings())
