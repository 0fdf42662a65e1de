"""The product's batch pipeline and its floor, on the corpus in memory: the fast measurements of ``make bench``.

- the floor: the product's loader alone (``load_image``, 1 thread and the Sorter's decode pool) plus batched
  inference alone on the decoded crops (``to_model_input`` + ``Classifier.probabilities``);
- the pipeline: ``Sorter.classify`` over Photos read from memory, each Result stored in a ``MemoryResultStore``
  (fp32, and the int8 model when there is one).

They are interleaved ``repeats`` times so that a noisy neighbour hits all of them alike; medians are reported.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench.common import log, median

if TYPE_CHECKING:
    from collections.abc import Callable

    from refund_sorter.config import Settings
    from refund_sorter.vision.classifier import Classifier
    from refund_sorter.vision.sorter import Sorter

INFERENCE_BATCH: Final = 16


def decode_all(datas: list[bytes], settings: Settings, workers: int) -> tuple[float, list[np.ndarray], list[float]]:
    """The product's loader over the corpus; ``workers`` threads (1: sequential). Returns seconds, crops, ms each."""
    from refund_sorter.vision.images import load_image

    def one(data: bytes) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        crop = load_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        return crop, (time.perf_counter() - start) * 1000

    started = time.perf_counter()
    if workers == 1:
        done = [one(d) for d in datas]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(one, datas))
    seconds = time.perf_counter() - started
    return seconds, [c for c, _ in done], [ms for _, ms in done]


def infer_all(
    classifier: Classifier, crops: list[np.ndarray], batch: int = INFERENCE_BATCH
) -> tuple[float, np.ndarray]:
    """Batched inference alone on pre-decoded crops: ``to_model_input`` + ``Classifier.probabilities``."""
    from refund_sorter.vision.images import to_model_input

    classifier.probabilities(to_model_input(crops[:batch]))  # warm
    started = time.perf_counter()
    out = [classifier.probabilities(to_model_input(crops[i : i + batch])) for i in range(0, len(crops), batch)]
    return time.perf_counter() - started, np.concatenate(out)


def pipeline_memory(sorter: Sorter, datas: list[bytes]) -> tuple[float, list[Any]]:
    """``Sorter.classify`` over Photos read from memory, each Result stored in a ``MemoryResultStore``."""
    from refund_sorter.photos import Photo
    from tests.fakes import MemoryResultStore

    photos = [
        Photo(id=f"bench-{i:04d}", source=f"memory://corpus/{i:04d}.jpg", read=functools.partial(bytes, data))
        for i, data in enumerate(datas)
    ]
    store = MemoryResultStore()
    started = time.perf_counter()
    results = []
    for outcome in sorter.classify(photos):
        if outcome.result is None:
            raise RuntimeError(f"{outcome.photo.source}: {outcome.transient_error!r}")
        store.add(outcome.result)
        results.append(outcome.result)
    return time.perf_counter() - started, results


def measure_core(
    datas: list[bytes], sorter: Sorter, int8: Classifier | None, repeats: int
) -> tuple[dict[str, list[float]], list[np.ndarray], list[float], np.ndarray, list[Any]]:
    """The fast measurements, interleaved ``repeats`` times so that a noisy neighbour hits all of them alike."""
    from refund_sorter.vision.sorter import Sorter

    runs: dict[str, list[float]] = {
        k: [] for k in ("decode_1", "decode_pool", "infer_fp32", "infer_int8", "pipeline", "pipeline_int8")
    }
    crops: list[np.ndarray] = []
    decode_ms: list[float] = []
    probs = np.empty(0)
    results: list[Any] = []
    int8_sorter = Sorter(sorter.settings, classifier=int8, taxonomy=sorter.taxonomy) if int8 else None
    pipeline_memory(sorter, datas[: 2 * INFERENCE_BATCH])  # warm: thread pool, session, allocator

    def clocked(key: str, measure: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        cpu = time.process_time()
        out = measure()
        runs[key].append(out[0])
        runs.setdefault(f"cpu_{key}", []).append(time.process_time() - cpu)  # every thread of this process
        return out

    for repeat in range(repeats):
        log(f"core measurements, round {repeat + 1}/{repeats}")
        _, crops, decode_ms = clocked("decode_1", functools.partial(decode_all, datas, sorter.settings, 1))
        clocked("decode_pool", functools.partial(decode_all, datas, sorter.settings, sorter.workers))
        _, probs = clocked("infer_fp32", functools.partial(infer_all, sorter.classifier, crops))
        if int8 is not None:
            clocked("infer_int8", functools.partial(infer_all, int8, crops))
        _, results = clocked("pipeline", functools.partial(pipeline_memory, sorter, datas))
        if int8_sorter is not None:
            clocked("pipeline_int8", functools.partial(pipeline_memory, int8_sorter, datas))
    return runs, crops, decode_ms, probs, results


def decode_stats(decode_ms: list[float], datas: list[bytes]) -> dict[str, float]:
    mb = np.array([len(d) / 1e6 for d in datas])
    ms = np.array(decode_ms)
    slope, intercept = np.polyfit(mb, ms, 1)
    return {
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "ms_per_mb_slope": float(slope),
        "ms_intercept": float(intercept),
    }


def summarise(results: dict[str, Any], runs: dict[str, list[float]], count: int, workers: int) -> dict[str, Any]:
    def ms(key: str) -> float | None:
        return 1000 * median(runs[key]) / count if runs[key] else None

    decode_single, decode_pool, infer = ms("decode_1"), ms("decode_pool"), ms("infer_fp32")
    assert decode_single is not None and decode_pool is not None and infer is not None
    batch_rate = count / median(runs["pipeline"])
    floor = decode_pool + infer
    naive_rate = results["naive"]["images_per_s"]
    return {
        "workers": workers,
        "naive_images_per_s": naive_rate,
        "decode_single_ms_per_image": decode_single,
        "decode_pool_ms_per_image": decode_pool,
        "infer_fp32_ms_per_image": infer,
        "infer_int8_ms_per_image": ms("infer_int8"),
        "floor_ms_per_image": floor,
        "floor_single_thread_ms_per_image": decode_single + infer,
        "floor_images_per_s": 1000 / floor,
        "batch_images_per_s": batch_rate,
        "batch_images_per_s_all_rounds": [count / s for s in runs["pipeline"]],
        "batch_int8_images_per_s": count / median(runs["pipeline_int8"]) if runs["pipeline_int8"] else None,
        "cpu_ms_per_image": {
            k.removeprefix("cpu_"): 1000 * median(v) / count for k, v in runs.items() if k.startswith("cpu_")
        },
        "pipeline_cpus_used": round(median(runs["cpu_pipeline"]) / median(runs["pipeline"]), 2),
        "batch_vs_naive_by_cpu_time": round(
            results["naive"]["cpu_ms_per_image"] / (1000 * median(runs["cpu_pipeline"]) / count), 2
        ),
        "batch_vs_naive": round(batch_rate / naive_rate, 2),
        "batch_vs_floor": round((1000 / batch_rate) / floor, 3),
    }
