"""The int8 model (``tools/model/quantize_int8.py``, not shipped) against fp32 on the same crops: does it sort
photos into the same departments? The rule for offering it as a setting is :data:`INT8_MIN_CATEGORY_AGREEMENT`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench.pipeline import infer_all

if TYPE_CHECKING:
    from refund_sorter.vision.classifier import Classifier
    from refund_sorter.vision.taxonomy import Taxonomy

INT8_MIN_CATEGORY_AGREEMENT: Final = 0.98


def int8_agreement(
    fp32_probs: np.ndarray, int8: Classifier, crops: list[np.ndarray], taxonomy: Taxonomy, threshold: float
) -> dict[str, Any]:
    _, int8_probs = infer_all(int8, crops)
    dept_fp32 = taxonomy.department_probabilities(fp32_probs)
    dept_int8 = taxonomy.department_probabilities(int8_probs)
    same_dept = dept_fp32.argmax(axis=1) == dept_int8.argmax(axis=1)
    same_label = fp32_probs.argmax(axis=1) == int8_probs.argmax(axis=1)
    confident = dept_fp32.max(axis=1) >= threshold
    ids = taxonomy.department_ids
    disagreements = [
        {
            "photo": int(i),
            "fp32": ids[int(dept_fp32[i].argmax())],
            "int8": ids[int(dept_int8[i].argmax())],
            "fp32_confidence": round(float(dept_fp32[i].max()), 3),
            "int8_confidence": round(float(dept_int8[i].max()), 3),
        }
        for i in np.flatnonzero(~same_dept)
    ]
    agreement = float(same_dept.mean())
    return {
        "model": int8.model_path.name,
        "version": int8.info.version,
        "file_mb": round(int8.model_path.stat().st_size / 1e6, 2),
        "photos": len(crops),
        "category_agreement": agreement,
        "top1_label_agreement": float(same_label.mean()),
        "category_agreement_when_fp32_confident": float(same_dept[confident].mean()) if confident.any() else None,
        "fp32_confident_photos": int(confident.sum()),
        "max_abs_probability_difference": float(np.abs(fp32_probs - int8_probs).max()),
        "disagreements": disagreements,
        "rule": f"offer int8 as a setting only if category agreement >= {INT8_MIN_CATEGORY_AGREEMENT:.0%}",
        "offer_as_setting": agreement >= INT8_MIN_CATEGORY_AGREEMENT,
        "how_to_select": "REFUND_SORTER_MODEL_PATH=out/model/efficientnet_lite0.int8.onnx (not shipped)",
    }
