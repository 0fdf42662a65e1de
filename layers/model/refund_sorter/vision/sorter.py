"""Photos in, Results out: the one path every entry point (CLI, API, nightly batch) goes through.

source bytes → :func:`~refund_sorter.vision.images.decode_photo` → :class:`~refund_sorter.classifier.Classifier`
→ :class:`~refund_sorter.taxonomy.Taxonomy` (or, when one is active, a shop's own
:class:`~refund_sorter.heads.Head` on the pooled features) → :class:`~refund_sorter.results.Result`.

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
from refund_sorter.heads.active import FixedHead, HeadSource
from refund_sorter.heads.embeddings import compact
from refund_sorter.heads.model import Head, model_version
from refund_sorter.photos import Photo  # noqa: TC001 - a dataclass field type
from refund_sorter.results import (
    NOT_A_PRODUCT,
    DepartmentScore,
    LabelScore,
    Result,
    ReviewReason,
    Status,
    decide,
)
from refund_sorter.vision.classifier import Classifier
from refund_sorter.vision.taxonomy import Department, Taxonomy

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

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
    # The photo's pooled features, float16[1280] (2.5 KB), for training heads (refund_sorter.heads.embeddings);
    # None when the photo failed or the model has no features output.
    embedding: np.ndarray | None = None
    thumbnail: bytes | None = None  # the reviewer's JPEG, from the decode the model used (classify(thumbnails=True))


class Sorter:
    """Classifies photos into refund departments.

    Parameters
    ----------
    settings
        The one settings object.
    classifier, taxonomy
        The ONNX model and the ImageNet class → department map (made from ``settings`` by default).
    heads
        Where the shop's own head comes from (:mod:`refund_sorter.heads.active`); by default none, and the
        taxonomy sorts. The process-wide Sorter (:func:`get_sorter`) is given the models table's ACTIVE pointer.
    """

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier | None = None,
        taxonomy: Taxonomy | None = None,
        heads: HeadSource | None = None,
    ):
        self.settings = settings
        self.classifier = classifier or Classifier(settings.model_path, settings.intra_op_threads)
        self.taxonomy = taxonomy or Taxonomy.load(settings.model_path.parent)
        self.heads = heads if heads is not None else FixedHead(None)
        self.workers = min(8, (os.cpu_count() or 1) * 2)

    @property
    def model_version(self) -> str:
        """The backbone, plus the head version when one is active: the exact model a Result came from."""
        return model_version(self.classifier.info.version, self.head())

    def head(self) -> Head | None:
        """The head sorting now (``None``: the ImageNet taxonomy)."""
        return self.heads.current()

    def departments(self) -> list[Department]:
        """What a prediction (and a reviewer) can name now: the head's departments when one is active."""
        head = self.head()
        if head is None:
            return list(self.taxonomy.departments)
        trained = head.card.get("training", {}).get("photos_per_department", {})
        return [
            Department(d, d.replace("_", " ").replace("-", " ").capitalize(), _learned_from(trained.get(d)))
            for d in head.departments
        ]

    def classify_one(self, photo: Photo) -> Result:
        """Classify one photo now (the API). Unlike :meth:`classify`, a photo we cannot read or decode raises
        its :class:`~refund_sorter.errors.RefundSorterError`: the caller answers the client with it."""
        return self.sort_one(photo, thumbnail=False)[0]

    def sort_one(self, photo: Photo, *, thumbnail: bool = True) -> tuple[Result, np.ndarray | None, bytes | None]:
        """:meth:`classify_one`, with what the API keeps beside the Result: the photo's features (for training
        heads, :mod:`refund_sorter.heads.embeddings`) and the reviewer's thumbnail, both from the same decode."""
        decoded = self._decode(photo.read(), thumbnail=thumbnail)
        ((result, embedding),) = self._classified([photo], [decoded.crop])
        return result, embedding, decoded.thumbnail

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
            for (position, photo, decoded), (result, embedding) in zip(ready, results, strict=True):
                outcomes[position] = Outcome(photo, result, embedding=embedding, thumbnail=decoded.thumbnail)
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
            max_memory=self.settings.decode_memory_mb * 1024 * 1024,
            thumbnail_side=self.settings.thumbnail_side if thumbnail else 0,
            size=self.classifier.info.input_size,
        )

    def failed_result(self, photo: Photo, error: RefundSorterError) -> Result:
        """The `failed` Result for a photo we could not read or decode."""
        return Result.from_error(id=photo.id, source=photo.source, error=error, model_version=self.model_version)

    def _classified(self, photos: list[Photo], crops: list[np.ndarray]) -> list[tuple[Result, np.ndarray | None]]:
        from refund_sorter.vision.images import to_model_input

        output = self.classifier.run(to_model_input(crops), mirror=self.settings.mirror_average)
        class_probs = output.probabilities
        taxonomy_probs = self.taxonomy.department_probabilities(class_probs)
        # Kept as float16; the head is applied to exactly what is kept, so re-applying any head to stored
        # features later (training, evaluation) reproduces what the running function decided.
        embeddings = compact(output.embeddings) if output.embeddings is not None else None
        head = self.head() if embeddings is not None else None  # one head for the whole chunk
        if head is None:
            departments, department_probs = self.taxonomy.department_ids, taxonomy_probs
            threshold, gate = self.settings.confidence_threshold, None
        else:
            departments, department_probs = head.departments, head.probabilities(embeddings)  # type: ignore[arg-type]
            threshold = head.threshold
            gate = taxonomy_probs[:, self.taxonomy.department_ids.index(NOT_A_PRODUCT)] >= head.gate
        version = model_version(self.classifier.info.version, head)
        taught = taught_counts(head)
        labels = self.taxonomy.labels
        top_k = self.settings.top_k
        results = []
        for row, (photo, probs, dept_probs) in enumerate(zip(photos, class_probs, department_probs, strict=True)):
            best = np.argsort(probs)[::-1][:top_k]
            best_departments = np.argsort(dept_probs)[::-1][:TOP_DEPARTMENTS]
            department = departments[int(best_departments[0])]
            confidence = _probability(dept_probs[best_departments[0]])
            # A head knows only its departments and names one for a cat too: ImageNet's not-a-product
            # classes (animals, scenes, food, space) still send such a photo to a person.
            gated = gate is not None and bool(gate[row])
            status, reason = decide(NOT_A_PRODUCT if gated else department, confidence, threshold)
            top = [(departments[i], _probability(dept_probs[i])) for i in best_departments]
            result = Result(
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
                top_departments=[DepartmentScore(department=d, confidence=p) for d, p in top],
                model_version=version,
                **(asked(top, reason, taught) if status is Status.NEEDS_REVIEW else {}),
            )
            results.append((result, embeddings[row] if embeddings is not None else None))
        return results


def taught_counts(head: Head | None) -> dict[str, int] | None:
    """The labelled photos per department ``head`` was fitted on (its version.json), for a class-balanced order."""
    if head is None:
        return None
    counts = head.card.get("training", {}).get("photos_per_department")
    return {str(d): int(n) for d, n in counts.items()} if isinstance(counts, dict) else None


def asked(
    top: Sequence[tuple[str, float]], reason: ReviewReason | None, taught: Mapping[str, int] | None
) -> dict[str, float | str]:
    """A waiting Result's place in the informative queue and the sentence that says why it is asked."""
    from refund_sorter.heads.informative import review_priority, why_asked

    because = NO_PRODUCT_SENTENCE if reason is ReviewReason.NOT_A_PRODUCT else why_asked(top, taught=taught)
    return {"priority": round(float(review_priority(top, taught=taught)), 6), "asked_because": because}


# The head may be sure of a department while ImageNet sees an animal or a scene: the margin would not say so.
NO_PRODUCT_SENTENCE = "it may show no product at all (an animal, a scene, food)"


def _probability(value: np.floating | float) -> float:
    # Six decimals: float32 noise beyond that only makes CSVs and API bodies harder to read.
    return min(1.0, max(0.0, round(float(value), 6)))


def _learned_from(photos: int | None) -> str:
    taught = "A department this shop taught the sorter"
    return f"{taught} ({photos} photos)" if photos else taught


@lru_cache(maxsize=1)
def get_sorter() -> Sorter:
    """The process-wide Sorter (and so one onnxruntime session), built on first use, sorting with the head the
    models table's ACTIVE pointer names (when the stack has one)."""
    from refund_sorter.heads.active import active_heads

    settings = get_settings()
    classifier = Classifier(settings.model_path, settings.intra_op_threads)
    return Sorter(settings, classifier, heads=active_heads(settings, classifier.info.version))
