"""``make memory``: peak RSS of the batch pipeline over 200 phone-sized (12 MP) JPEGs.

The pipeline streams: at most ``2 × batch_size`` photos are read and decoded ahead of inference, so memory
must stay flat however many photos a night brings. This samples the process's resident set every 20 ms
while ``Sorter.classify`` runs and reports the peak after the model is loaded, and at every 50 photos.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import resource
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from refund_sorter.photos import Photo
from refund_sorter.vision.sorter import get_sorter
from refund_sorter_cli.samples import PHOTOS, photo_image

OUT = Path(__file__).resolve().parents[1] / "out" / "memory.json"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def phone_jpegs() -> list[bytes]:
    """One 4000×3000 JPEG per wheel photo (~2–4 MB each), reused round-robin: the bytes a night would hold."""
    jpegs = []
    for name in PHOTOS:
        buffer = io.BytesIO()
        photo_image(name).resize((4000, 3000), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    args = parser.parse_args()

    sorter = get_sorter()
    sorter.classifier.warm_up()
    jpegs = phone_jpegs()
    baseline = rss_mb()
    peak = baseline
    running = True

    def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    photos = (
        Photo(id=str(i), source=f"memory://{i}.jpg", read=functools.partial(bytes, jpegs[i % len(jpegs)]))
        for i in range(args.photos)
    )
    marks: dict[int, float] = {}
    started = time.perf_counter()
    done = 0
    for outcome in sorter.classify(photos):
        assert outcome.result is not None
        done += 1
        if done % 50 == 0:
            marks[done] = round(peak, 1)
    seconds = time.perf_counter() - started
    running = False
    sampler.join()
    report = {
        "photos": done,
        "photo_size": "4000x3000 JPEG, quality 90",
        "jpeg_mb_each": round(sum(map(len, jpegs)) / len(jpegs) / 1e6, 2),
        "batch_size": sorter.settings.batch_size,
        "decode_workers": sorter.workers,
        "rss_mb_after_model_load": round(baseline, 1),
        "peak_rss_mb_so_far_at": marks,
        "peak_rss_mb": round(peak, 1),
        "max_rss_mb_getrusage": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(seconds, 1),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
