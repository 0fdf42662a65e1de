"""``make bench-review``: how fast a person can clear the review queue, and what thumbnails cost the nightly job.

Writes ``bench/review.json`` and ``bench/review.md``, and the README's screenshots (``docs/review-page.png``,
``docs/review-summary.png``).

- Key press → next photo fully shown, p50/p95 over N decisions in headless Chromium (Debian's) against the local
  stack (``refund-sorter local`` in a child process: moto and the local API), measured inside the page: from the
  keydown event to the second animation frame after the next photo's ``<img>`` is in the document and loaded
  (painted). Twice: at a person's pace (a pause after each photo appears) and flat out (the next key as soon as
  the photo is there), which gives the ceiling on decisions per minute.
- Page load → first photo with Q photos queued (navigation start → the same "shown" moment), median of L loads.
- Thumbnails: median size over the benchmark corpus (phone-like 8–12 MP JPEGs, ``bench/corpus.py``), and the
  extra time per photo they cost, both in the pipeline alone and in the whole nightly job on moto (runs with and
  without thumbnails alternate, medians compared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench import corpus as corpus_module
from bench.common import local_stack, log, percentile

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    from playwright.sync_api import Browser, Page

    from refund_sorter.vision.sorter import Sorter
    from tests.stack_process import RunningStack

ROOT: Final = Path(__file__).resolve().parents[1]
OUT_JSON: Final = ROOT / "bench" / "review.json"
OUT_MD: Final = ROOT / "bench" / "review.md"
SCREENSHOT: Final = ROOT / "docs" / "review-page.png"
SUMMARY_SCREENSHOT: Final = ROOT / "docs" / "review-summary.png"
# Injected before the page's own scripts (as DevTools does: the page's CSP does not apply to it). Records each
# digit keydown and the moment each new photo is painted: in the document, loaded, two animation frames later.
PROBE: Final = """
window.__review = { keys: [], shown: [] };
document.addEventListener("keydown", (event) => {
  if (/^[1-9]$/.test(event.key)) window.__review.keys.push(performance.now());
}, true);
let last = null;
new MutationObserver(() => {
  const img = document.querySelector("#photo-frame img[data-prediction-id]");
  if (!img || img === last) return;
  last = img;
  const painted = () => requestAnimationFrame(() => requestAnimationFrame(() =>
    window.__review.shown.push({ id: img.dataset.predictionId, at: performance.now() })));
  if (img.complete) painted(); else img.addEventListener("load", painted, { once: true });
}).observe(document, { childList: true, subtree: true });
"""
PHOTO: Final = "img[data-prediction-id]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100, help="decisions per pace (default 100)")
    parser.add_argument("--queued", type=int, default=1000, help="photos in the queue (default 1000)")
    parser.add_argument("--loads", type=int, default=5, help="page loads timed (default 5)")
    parser.add_argument("--pause-ms", type=int, default=400, help="a person's pause after each photo (default 400)")
    parser.add_argument("--nightly-runs", type=int, default=3, help="nightly runs with and without thumbnails")
    args = parser.parse_args()

    from refund_sorter.vision.sorter import get_sorter

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
    }
    sorter = get_sorter()
    datas = corpus_module.ensure().read_all()
    log(f"thumbnails: {len(datas)} corpus photos, pipeline with and without")
    results["thumbnails"] = thumbnail_cost(sorter, datas)
    results["thumbnail_cpu"] = thumbnail_cpu(sorter, datas)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # so far, in case a later part fails
    with local_stack("bench-review") as stack:
        log("thumbnails: the nightly job on moto, with and without")
        results["nightly"] = nightly_cost(sorter, datas, stack, args.nightly_runs)
        OUT_JSON.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        log(f"review page: {args.queued} queued, {args.loads} loads, 2 × {args.decisions} decisions")
        results["page"] = page_numbers(stack, args)
    results["machine"]["load_average_after"] = os.getloadavg()
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    OUT_MD.write_text(markdown(results, args), encoding="utf-8")
    log(f"wrote {OUT_JSON.relative_to(ROOT)}, {OUT_MD.relative_to(ROOT)}, {SCREENSHOT.relative_to(ROOT)}")
    print(OUT_MD.read_text(encoding="utf-8"))
    return 0


# ------------------------------------------------------------------------------------------------ thumbnails


def thumbnail_cost(sorter: Sorter, datas: list[bytes], runs: int = 3) -> dict[str, Any]:
    """The pipeline (read, decode, infer) over the corpus with and without thumbnails, alternating."""
    from refund_sorter.photos import Photo

    photos = [Photo(id=str(i), source=str(i), read=lambda d=data: d) for i, data in enumerate(datas)]  # type: ignore[misc]
    list(sorter.classify(photos[:16]))  # warm the session and the pools
    seconds: dict[bool, list[float]] = {False: [], True: []}
    sizes: list[int] = []
    dimensions: set[tuple[int, int]] = set()
    for _ in range(runs):
        for with_thumbnails in (False, True):
            started = time.perf_counter()
            outcomes = list(sorter.classify(photos, thumbnails=with_thumbnails))
            seconds[with_thumbnails].append(time.perf_counter() - started)
            if with_thumbnails and not sizes:
                from io import BytesIO

                from PIL import Image

                sizes = [len(o.thumbnail) for o in outcomes if o.thumbnail]
                dimensions = {Image.open(BytesIO(o.thumbnail)).size for o in outcomes if o.thumbnail}
    without, with_ = statistics.median(seconds[False]), statistics.median(seconds[True])
    return {
        "what": "Sorter.classify over the corpus (bytes in memory: decode + inference), thumbnails off/on, alternating",
        "photos": len(datas),
        "median_kb": round(statistics.median(sizes) / 1024, 1),
        "p90_kb": round(percentile([float(s) for s in sizes], 90) / 1024, 1),
        "sizes_px": sorted(dimensions),
        "ms_per_photo_without": round(1000 * without / len(datas), 2),
        "ms_per_photo_with": round(1000 * with_ / len(datas), 2),
        "extra_percent": round(100 * (with_ / without - 1), 1),
        "runs_seconds": {"without": seconds[False], "with": seconds[True]},
    }


def thumbnail_cpu(sorter: Sorter, datas: list[bytes], rounds: int = 3) -> dict[str, Any]:
    """CPU time per photo (thread CPU, so other processes on the machine do not count): decoding with and
    without the thumbnail, interleaved photo by photo, and inference in batches, for the extra's share."""
    from refund_sorter.vision.images import decode_photo, to_model_input

    limits = {"max_bytes": sorter.settings.max_image_bytes, "max_pixels": sorter.settings.max_image_pixels}
    side = sorter.settings.thumbnail_side
    plain: list[float] = []
    with_thumbnail: list[float] = []
    crops: list[np.ndarray] = []
    for _ in range(rounds):
        for data in datas:
            for sink, thumbnail_side in ((plain, 0), (with_thumbnail, side)):
                started = time.thread_time()
                decoded = decode_photo(data, thumbnail_side=thumbnail_side, **limits)
                sink.append(time.thread_time() - started)
            if len(crops) < len(datas):
                crops.append(decoded.crop)
    batch = sorter.settings.batch_size
    started = time.process_time()  # onnxruntime's threads are this process's too
    for _ in range(rounds):
        for start in range(0, len(crops), batch):
            sorter.classifier.probabilities(to_model_input(crops[start : start + batch]))
    inference = (time.process_time() - started) / (rounds * len(crops))
    decode, extra = statistics.median(plain), statistics.median(with_thumbnail) - statistics.median(plain)
    return {
        "what": "CPU time per photo: decode_photo without/with thumbnail (interleaved), inference in batches",
        "decode_ms": round(1000 * decode, 2),
        "thumbnail_extra_ms": round(1000 * extra, 2),
        "inference_ms": round(1000 * inference, 2),
        "pipeline_ms_without": round(1000 * (decode + inference), 1),
        "pipeline_ms_with": round(1000 * (decode + inference + extra), 1),
        "extra_percent_of_pipeline_cpu": round(100 * extra / (decode + inference), 1),
    }


def nightly_cost(sorter: Sorter, datas: list[bytes], stack: RunningStack, runs: int) -> dict[str, Any]:
    """``run_nightly`` on moto (list, read, classify, store, thumbnail, archive, export), thumbnails off/on."""
    import boto3

    from refund_sorter.config import Settings, get_settings
    from refund_sorter.jobs.nightly import run_nightly
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter_cli.local_stack import function_environment
    from refund_sorter_cli.template import Template

    template = Template()
    for key, value in function_environment(template, "ClassifyChunkFunction").items():
        os.environ[key] = value
    get_settings.cache_clear()
    settings = get_settings()
    # One model session for both: only the thumbnail setting differs.
    sorters = {
        True: sorter,
        False: Sorter(Settings(thumbnail_side=0), classifier=sorter.classifier, taxonomy=sorter.taxonomy),
    }
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for with_thumbnails in (False, True):
            stack.reset(template)
            s3 = boto3.client("s3")
            for index, data in enumerate(datas):
                s3.put_object(Bucket=settings.bucket, Key=f"incoming/{index:03d}.jpg", Body=data)
            report = run_nightly(sorters[with_thumbnails], DynamoResultStore(settings.table), PhotoBucket(settings))
            assert report.processed == len(datas), report.as_dict()
            thumbnails = s3.list_objects_v2(Bucket=settings.bucket, Prefix=settings.thumbnails_prefix).get("KeyCount")
            assert (thumbnails or 0) == (len(datas) if with_thumbnails else 0)
            seconds[with_thumbnails].append(report.seconds)
    without, with_ = statistics.median(seconds[False]), statistics.median(seconds[True])
    return {
        "what": "run_nightly on a moto server (its own process), thumbnails off (thumbnail_side=0) / on, alternating",
        "photos": len(datas),
        "ms_per_photo_without": round(1000 * without / len(datas), 2),
        "ms_per_photo_with": round(1000 * with_ / len(datas), 2),
        "extra_percent": round(100 * (with_ / without - 1), 1),
        "runs_seconds": {"without": seconds[False], "with": seconds[True]},
    }


# ------------------------------------------------------------------------------------------------ the page


@contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    from tests.chromium import launch

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def page_numbers(stack: RunningStack, args: argparse.Namespace) -> dict[str, Any]:
    """The review page in Chromium, served by the stack's own API (in the stack's process), a fresh queue seeded."""
    from refund_sorter.config import get_settings
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter_cli.template import Template
    from tests.review_data import seed_queue

    stack.reset(Template())  # the queue is the seeded photos only, not the nightly runs' Results
    api = stack.api_url
    with chromium() as browser:
        settings = get_settings()
        started = time.perf_counter()
        seed_queue(DynamoResultStore(settings.table), PhotoBucket(settings), args.queued)
        log(f"  seeded {args.queued} in {time.perf_counter() - started:.1f} s")
        requests: dict[str, list[float]] = {}
        loads = [first_photo_ms(browser, api, requests) for _ in range(args.loads)]
        page = open_page(browser, api)
        paced = decide_many(page, args.decisions, pause_ms=args.pause_ms)
        flat_out = decide_many(page, args.decisions, pause_ms=0)
        page.screenshot(path=str(SCREENSHOT))
        page.keyboard.press("s")
        # The summary reads the whole night: on moto (its queries are linear scans) that takes a while.
        page.locator("svg#confidence-histogram").wait_for(timeout=300_000)
        page.screenshot(path=str(SUMMARY_SCREENSHOT))
        page.context.close()
    return {
        "queued": args.queued,
        "first_photo_ms": {"median": round(statistics.median(loads), 1), "runs": [round(x, 1) for x in loads]},
        "load_requests_median_ms": {
            route: round(statistics.median(times), 1) for route, times in sorted(requests.items())
        },
        "paced": paced | {"pause_ms": args.pause_ms},
        "flat_out": flat_out,
    }


def open_page(browser: Browser, api: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(PROBE)
    page = context.new_page()
    page.goto(f"{api}/review")
    page.locator(PHOTO).wait_for()
    return page


def wait_until(page: Page, expression: str) -> None:
    """Poll an expression (wait_for_function evaluates strings in a way the page's CSP forbids)."""
    while not page.evaluate(expression):
        page.wait_for_timeout(10)


def first_photo_ms(browser: Browser, api: str, requests: dict[str, list[float]]) -> float:
    """One fresh load; the time each API request took goes to ``requests``. The load waits for the page's
    counting (after its first photo) to finish, so the next load starts on an idle API."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(PROBE)
    page = context.new_page()

    def finished(request: Any) -> None:
        timing = request.timing
        route = request.url.split("?", 1)[0].removeprefix(api)
        route = "/predictions/{id}/photo" if route.endswith("/photo") else route
        route = route if route.startswith("/") else "S3 (moto): the photo"
        requests.setdefault(route, []).append(timing["responseEnd"] - timing["requestStart"])

    page.on("requestfinished", finished)
    page.goto(f"{api}/review")
    wait_until(page, "window.__review.shown.length > 0")
    shown: float = page.evaluate("window.__review.shown[0].at")
    page.locator("#left-total:not(:text-is('0'))").wait_for(timeout=300_000)
    context.close()
    return shown


def decide_many(page: Page, count: int, *, pause_ms: int) -> dict[str, Any]:
    """Press 1 ``count`` times, each once the photo is there (after ``pause_ms``); latencies from the probe."""
    first_key = len(page.evaluate("window.__review.keys"))
    first_shown = len(page.evaluate("window.__review.shown"))
    for _ in range(count):
        current = page.locator(PHOTO).get_attribute("data-prediction-id")
        if pause_ms:
            page.wait_for_timeout(pause_ms)
        page.keyboard.press("1")
        page.wait_for_selector(f"{PHOTO}:not([data-prediction-id='{current}'])")
    wait_until(page, f"window.__review.shown.length >= {first_shown + count}")
    page.wait_for_selector("body[data-pending='0']", state="attached")
    keys = page.evaluate("window.__review.keys")[first_key:]
    shown = [s["at"] for s in page.evaluate("window.__review.shown")[first_shown : first_shown + count]]
    latencies = [after - key for key, after in zip(keys, shown, strict=True)]
    span_s = (shown[-1] - keys[0]) / 1000
    return {
        "decisions": count,
        "key_to_shown_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "max": round(max(latencies), 1),
        },
        "decisions_per_minute": round(60 * count / span_s, 1),
        "ceiling_per_minute_from_p50": round(60_000 / percentile(latencies, 50)),
    }


# ------------------------------------------------------------------------------------------------ report


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    thumbnails, nightly, page = results["thumbnails"], results["nightly"], results["page"]
    cpu = results["thumbnail_cpu"]
    paced, flat = page["paced"], page["flat_out"]
    machine = results["machine"]
    return f"""# Review page and thumbnails (`make bench-review`)

Machine: {machine["cpus"]} CPUs, Python {machine["python"]}, load average {machine["load_average"][0]:.1f} at the
start and {machine["load_average_after"][0]:.1f} at the end (other work shared the CPUs: absolute times are
pessimistic; the with/without ratios are measured in alternating runs of the same process).

## Deciding (headless Chromium against the local stack, {page["queued"]} photos queued)

| | key → next photo shown, p50 | p95 | max | decisions / minute |
|---|---|---|---|---|
| at a person's pace ({paced["pause_ms"]} ms pause per photo) | {paced["key_to_shown_ms"]["p50"]} ms | \
{paced["key_to_shown_ms"]["p95"]} ms | {paced["key_to_shown_ms"]["max"]} ms | {paced["decisions_per_minute"]} |
| flat out (next key as soon as the photo is there) | {flat["key_to_shown_ms"]["p50"]} ms | \
{flat["key_to_shown_ms"]["p95"]} ms | {flat["key_to_shown_ms"]["max"]} ms | {flat["decisions_per_minute"]} |

{args.decisions} decisions each; "shown" = the next photo's `<img>` in the document, loaded, two animation frames
later (painted). The page never waits on the network between two decisions: the next {4} photos are fetched and
decoded ahead and the decision goes out through the page's outbox. Ceiling from the flat-out p50:
**{flat["ceiling_per_minute_from_p50"]} decisions per minute** (the person, not the page, is the limit).

Page load → first photo with {page["queued"]} queued: **{page["first_photo_ms"]["median"]} ms** (median of
{len(page["first_photo_ms"]["runs"])} loads: {page["first_photo_ms"]["runs"]}). Where a load's time goes (median
per request, ms; the local API serves one request at a time, like one Lambda environment, and moto's queries
scan the whole table): {page["load_requests_median_ms"]}.

## Thumbnails

Over the {thumbnails["photos"]} phone-like JPEGs of `bench/corpus.py` (8–12 MP): median **{thumbnails["median_kb"]} KB**
(p90 {thumbnails["p90_kb"]} KB), sizes {thumbnails["sizes_px"]} px: the JPEG's 1/8-scale draft decode the model
already uses, encoded once more (no second decode).

| | without | with | extra |
|---|---|---|---|
| CPU per photo (decode + inference; thread CPU time, not disturbed by other load) | \
{cpu["pipeline_ms_without"]} ms | {cpu["pipeline_ms_with"]} ms | \
**{cpu["extra_percent_of_pipeline_cpu"]} %** |
| pipeline alone (decode + inference), wall ms per photo | {thumbnails["ms_per_photo_without"]} | \
{thumbnails["ms_per_photo_with"]} | {thumbnails["extra_percent"]} % |
| nightly job on moto (+ S3 put of the thumbnail), ms per photo | {nightly["ms_per_photo_without"]} | \
{nightly["ms_per_photo_with"]} | {nightly["extra_percent"]} % |

The thumbnail costs {cpu["thumbnail_extra_ms"]} ms of CPU on a {cpu["decode_ms"]} ms decode and {cpu["inference_ms"]} ms
of inference per photo; its S3 put runs on the nightly job's I/O threads, beside inference. The wall-clock rows
are medians of alternating runs and move with the machine's other load: pipeline {thumbnails["runs_seconds"]},
nightly {nightly["runs_seconds"]} (seconds).
"""


if __name__ == "__main__":
    raise SystemExit(main())
