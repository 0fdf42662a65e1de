"""``make memory``: peak RSS of decoding one photo per image mode, and of the batch pipeline over 200 phone JPEGs.

``--modes`` (bench/memory.json, bench/memory.md): every mode Pillow opens for the formats we take, each at the
largest size the pixel limit and the decode budget (``Settings.decode_memory_mb``) let through, and at the 64 MP
pixel limit when that is larger. Each decode runs in a fresh subprocess whose peak RSS (VmHWM, reset just before
the decode) is reported above its RSS before it, twice: with ``decode_photo`` as it is in this checkout ("after")
and as it was before the budget (``BEFORE_COMMIT``, read with ``git show``: "before"). Then phone JPEGs: decode
time before and after, interleaved in one process, and whether the crops are bit-identical.

Without ``--modes``: the pipeline streams: at most ``2 × batch_size`` photos are read and decoded ahead of
inference, so memory must stay flat however many photos a night brings. This samples the process's resident set
every 20 ms while ``Sorter.classify`` runs and reports the peak after the model is loaded, and at every 50 photos
(out/memory.json).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from refund_sorter.photos import Photo
from refund_sorter.vision.sorter import get_sorter
from refund_sorter_cli.samples import PHOTOS, photo_image

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "memory.json"
BENCH = ROOT / "bench"
IMAGES_PY = "layers/model/refund_sorter/vision/images.py"
# main before the decode budget (issue 20): the "before" column.
BEFORE_COMMIT = "bf388406fc5f0a011790418bf8a2ca5b9a616233"
MIB = 1024 * 1024


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


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_images_module(path: Path, name: str) -> ModuleType:
    """A version of refund_sorter/vision/images.py loaded from a file, beside the installed package."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def decode_one(impl: Path, photo: Path) -> dict[str, Any]:
    """(In the subprocess) decode one photo as the product does (thumbnail and all) and measure its peak RSS."""
    from refund_sorter.config import Settings
    from refund_sorter.errors import ImageError

    images = load_images_module(impl, "images_under_test")
    images.register_decoders()
    settings = Settings()
    data = photo.read_bytes()
    limits: dict[str, int] = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
    estimate = None
    if hasattr(images, "_decode_cost"):  # after: the budget, and what it expects this photo to need
        limits["max_memory"] = settings.decode_memory_mb * MIB
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (images.DRAFT_SIZE, images.DRAFT_SIZE))
            estimate = round(images._decode_cost(image.mode, image.size, images.sniff_format(data[:64]))[0] / MIB, 1)
    before = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak from here on
    started = time.perf_counter()
    try:
        images.decode_photo(data, thumbnail_side=settings.thumbnail_side, **limits)
        result, message = "ok", ""
    except ImageError as exc:
        result, message = exc.code.value, exc.message
    seconds = time.perf_counter() - started
    return {
        "peak_mb": round(status_mb("VmHWM") - before, 1),
        "result": result,
        "message": message,
        "seconds": round(seconds, 2),
        "estimate_mb": estimate,
    }


def measure(impl: Path, photo: Path) -> dict[str, Any]:
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tools.memory_check", "--decode-one", str(photo), "--impl", str(impl)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=False)
    if done.returncode != 0:
        return {"peak_mb": None, "result": f"crashed (exit {done.returncode})", "message": done.stderr[-300:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def largest_allowed_side(images: ModuleType, mode: str, fmt: str, budget: int, max_pixels: int) -> int:
    """The largest square side the pixel limit and the budget let through for this mode and codec."""
    side = int(max_pixels**0.5)
    if fmt == "JPEG":
        return side  # decoded at its draft scale
    while side > 16 and images._decode_cost(mode, (side, side), fmt)[0] > budget:
        side -= 16
    return side


def mode_table() -> dict[str, Any]:
    from refund_sorter.config import Settings
    from refund_sorter.vision import images
    from tests.odd_images import HEIC_48MP, HEIC_48MP_10BIT, PIXEL_HEAVY, pixel_heavy

    settings = Settings()
    budget = settings.decode_memory_mb * MIB
    after = ROOT / IMAGES_PY
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        before = Path(scratch) / "images_before.py"
        before.write_text(
            subprocess.run(
                ["git", "show", f"{BEFORE_COMMIT}:{IMAGES_PY}"], capture_output=True, text=True, cwd=ROOT, check=True
            ).stdout
        )
        cases: list[tuple[str, str, bytes | None]] = [(name, mode, None) for name, (mode, _) in PIXEL_HEAVY.items()]
        cases.append(("HEIC, iPhone 48 MP (fixture)", "RGB", HEIC_48MP.read_bytes()))
        cases.append(("HEIC, 48 MP, 10 bits a channel (fixture)", "RGB", HEIC_48MP_10BIT.read_bytes()))
        for name, mode, fixed in cases:
            photo = Path(scratch) / "photo"
            if fixed is not None:
                sizes: list[tuple[int, int]] = [(8064, 6048)]
            else:
                probe = pixel_heavy(name, 16, 16)
                fmt = images.sniff_format(probe[:64]) or "?"
                side = largest_allowed_side(images, mode, fmt, budget, settings.max_image_pixels)
                full = int(settings.max_image_pixels**0.5)
                sizes = [(side, side)] + ([(full, full)] if side < full else [])
            for width, height in sizes:
                data = fixed if fixed is not None else pixel_heavy(name, width, height)
                photo.write_bytes(data)
                row = {
                    "photo": name,
                    "mode": mode,
                    "size": f"{width}x{height}",
                    "megapixels": round(width * height / 1e6, 1),
                    "file_kb": round(len(data) / 1024, 1),
                    "before": measure(before, photo),
                    "after": measure(after, photo),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
        speed = phone_jpeg_speed(load_images_module(before, "images_before"), images)
    return {
        "what": "peak RSS of one decode_photo (thumbnail included) above the process's RSS before it, per mode",
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        "before": f"decode_photo at {BEFORE_COMMIT[:7]} (git show)",
        "after": "decode_photo in this checkout",
        "decode_memory_mb": settings.decode_memory_mb,
        "max_image_pixels": settings.max_image_pixels,
        "rows": rows,
        "phone_jpegs": speed,
    }


def phone_jpeg_speed(before: ModuleType, after: ModuleType, rounds: int = 15) -> dict[str, Any]:
    """Decode time of phone-sized JPEGs before and after, alternating, and whether the crops are identical."""
    jpegs = phone_jpegs()
    limits = {"max_bytes": 50_000_000, "max_pixels": 64_000_000}
    times: dict[str, list[float]] = {"before": [], "after": []}
    identical = True
    for _ in range(rounds):
        for data in jpegs:
            crops = {}
            for label, module in (("before", before), ("after", after)):
                started = time.perf_counter()
                crops[label] = module.decode_photo(data, thumbnail_side=512, **limits)
                times[label].append(time.perf_counter() - started)
            identical &= bool(np.array_equal(crops["before"].crop, crops["after"].crop))
            identical &= crops["before"].thumbnail == crops["after"].thumbnail
    return {
        "photos": f"{len(jpegs)} wheel photos at 4000x3000, JPEG quality 90, {rounds} rounds, alternating",
        "median_ms_before": round(statistics.median(times["before"]) * 1000, 1),
        "median_ms_after": round(statistics.median(times["after"]) * 1000, 1),
        "crops_and_thumbnails_identical": identical,
    }


def _cell(measured: dict[str, Any]) -> str:
    if measured.get("peak_mb") is None:
        return measured["result"]
    if measured["result"] == "ok":
        return f"{measured['peak_mb']:,.0f}"
    return f"{measured['peak_mb']:,.0f} ({measured['result']})"


def write_mode_table(report: dict[str, Any]) -> None:
    (BENCH / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Decoding memory per image mode (`make memory`)",
        "",
        f"Machine: {report['machine']}. Budget `decode_memory_mb` = {report['decode_memory_mb']} MiB, pixel limit "
        f"{report['max_image_pixels']:,}. Peak RSS of one `decode_photo` (with the reviewer's thumbnail) in a fresh "
        "process, above its RSS before the decode, in MiB; before = "
        f"{report['before']}, after = {report['after']}. Estimate = what the decode reserves from the budget "
        "(it must stay above the measured peak). Each mode at the largest size the budget lets through, and at "
        "the 64 MP pixel limit when that is larger (refused after: `decompression_bomb`, before any pixel is "
        "decoded). The photos are one colour (small files; the decoders' memory does not depend on the content).",
        "",
        "| photo | mode | size | MP | file KB | before, MiB | after, MiB | after: estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        estimate = row["after"].get("estimate_mb")
        lines.append(
            f"| {row['photo']} | {row['mode']} | {row['size']} | {row['megapixels']} | {row['file_kb']:,.0f} | "
            f"{_cell(row['before'])} | {_cell(row['after'])} | {'' if estimate is None else f'{estimate:,.0f}'} |"
        )
    speed = report["phone_jpegs"]
    lines += [
        "",
        f"Phone JPEGs ({speed['photos']}): median decode **{speed['median_ms_before']} ms before, "
        f"{speed['median_ms_after']} ms after**; crops and thumbnails bit-identical: "
        f"{'yes' if speed['crops_and_thumbnails_identical'] else 'NO'}.",
        "",
    ]
    (BENCH / "memory.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--modes", action="store_true", help="the per-mode decode table (bench/memory.*)")
    parser.add_argument("--decode-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--impl", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode_one:
        print(json.dumps(decode_one(args.impl, args.decode_one)))
        return 0
    if args.modes:
        write_mode_table(mode_table())
        print((BENCH / "memory.md").read_text())
        return 0

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
