"""The naive baseline: what one would write first, one photo at a time. The batch pipeline is measured against it."""

from __future__ import annotations

import io
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.vision.taxonomy import Taxonomy


def naive(datas: list[bytes], model_path: Path) -> dict[str, Any]:
    """What one would write first: full decode, exif_transpose, resize, one onnxruntime call per photo
    (a session with default options)."""
    import onnxruntime
    from PIL import Image, ImageOps

    from refund_sorter.vision.images import CROP_FRACTION, MODEL_SIZE, to_model_input

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: np.zeros((1, 3, MODEL_SIZE, MODEL_SIZE), np.float32)})
    stages = Counter[str]()
    logits_all: list[np.ndarray] = []
    cpu = time.process_time()
    started = time.perf_counter()
    for data in datas:
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            t1 = time.perf_counter()
            upright = ImageOps.exif_transpose(image).convert("RGB")
        t2 = time.perf_counter()
        width, height = upright.size
        side = round(min(width, height) * CROP_FRACTION)
        left, top = (width - side) // 2, (height - side) // 2
        crop = upright.resize(
            (MODEL_SIZE, MODEL_SIZE), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
        )
        t3 = time.perf_counter()
        (logits,) = session.run(["logits"], {name: to_model_input([np.asarray(crop)])})
        logits_all.append(np.asarray(logits)[0])
        t4 = time.perf_counter()
        stages.update({"decode": t1 - t0, "exif_transpose": t2 - t1, "resize": t3 - t2, "inference_batch1": t4 - t3})
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    count = len(datas)
    return {
        "cpu_ms_per_image": 1000 * cpu / count,
        "what": "full decode (no draft) + ImageOps.exif_transpose + bicubic resize + one onnxruntime call per photo "
        "(default session options), sequential",
        "images": count,
        "seconds": seconds,
        "images_per_s": count / seconds,
        "ms_per_image": {k: 1000 * v / count for k, v in stages.items()},
        "logits": np.stack(logits_all),
    }


def agreement(naive_logits: np.ndarray, product_probs: np.ndarray, taxonomy: Taxonomy) -> dict[str, float]:
    """Does draft decoding (the product) pick what a full decode (naive) picks? Top-1 label and department."""
    from refund_sorter.vision.classifier import softmax

    naive_probs = softmax(naive_logits)
    product = product_probs[: len(naive_probs)]
    naive_dept = taxonomy.department_probabilities(naive_probs).argmax(axis=1)
    product_dept = taxonomy.department_probabilities(product).argmax(axis=1)
    return {
        "top1_agreement_with_product": float((naive_probs.argmax(axis=1) == product.argmax(axis=1)).mean()),
        "category_agreement_with_product": float((naive_dept == product_dept).mean()),
    }
