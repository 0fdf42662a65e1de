"""``make bench-night``: the nightly fan-out's numbers, written to ``bench/fanout.json`` and ``bench/fanout.md``.

Two measurements, each in this one run, on one local stack (``refund-sorter local`` in a child process):

1. **The worker at the pipeline's speed.** The bench corpus (:mod:`bench.corpus`: 112 phone-like 8–12 MP
   JPEGs) through the in-memory pipeline (``Sorter.classify`` → ``MemoryResultStore``, as ``make bench``
   measures it) and through one nightly worker on moto (``classify_chunk``: BatchGetItem lookups, S3 reads,
   conditional PutItem, move to processed/), interleaved ``--rounds`` times; the ratio of the medians is the
   number that matters (absolute speeds move with the machine's other load).
2. **A night.** ``--photos`` generated small JPEGs in incoming/, then the template's state machine on the
   local runner (plan → Distributed Map → export) with 1 and with 2 local worker processes: plan time, total
   time, photos/s, and the check that every photo has exactly one Result and sits in processed/ or failed/.

Run from the repo root: ``.venv/bin/python -m bench.fanout`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench import common

if TYPE_CHECKING:
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter_cli.stepfunctions import Event
    from refund_sorter_cli.template import Template
    from tests.stack_process import RunningStack

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS_JSON: Final = ROOT / "bench" / "fanout.json"
RESULTS_MD: Final = ROOT / "bench" / "fanout.md"
TARGET_WORKER_VS_PIPELINE: Final = 0.8


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process's running child processes (the moto server)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def log(message: str) -> None:
    common.log(message, "bench-night")


# ------------------------------------------------------------------------------------------------ the stack


def fresh_stack(stack: RunningStack, template: Template) -> None:
    """Empty moto, then the template's bucket and tables (as the local stack makes them)."""
    from refund_sorter.config import get_settings
    from refund_sorter.storage.clients import reset_clients
    from refund_sorter_cli.local_stack import function_environment

    stack.reset(template)
    for key, value in function_environment(template, "ClassifyChunkFunction").items():
        os.environ[key] = value
    get_settings.cache_clear()
    reset_clients()


def upload(items: list[tuple[str, bytes]]) -> float:
    from refund_sorter.config import get_settings
    from refund_sorter.storage.clients import s3_client

    bucket, s3 = get_settings().bucket, s3_client()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), items))
    return time.perf_counter() - started


def check_each_photo_once(keys: list[str]) -> dict[str, Any]:
    """Exactly one Result per photo, each photo in processed/ or failed/, none left in incoming/."""
    from refund_sorter.config import get_settings
    from refund_sorter.storage.clients import dynamodb_client, s3_client

    settings = get_settings()
    # A Result names where its photo is kept now (photo_key): processed/a.jpg is the photo incoming/a.jpg was.
    pages = dynamodb_client().get_paginator("scan").paginate(TableName=settings.table, ProjectionExpression="#k",
                                                             ExpressionAttributeNames={"#k": "photo_key"})  # fmt: skip
    per_photo = Counter(item["photo_key"]["S"].split("/", 1)[1] for page in pages for item in page["Items"])

    def keys_under(prefix: str) -> set[str]:
        listing = s3_client().get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix)
        return {obj["Key"].split("/", 1)[1] for page in listing for obj in page.get("Contents", [])}

    filed = keys_under(settings.processed_prefix) | keys_under(settings.failed_prefix)
    expected = {key.split("/", 1)[1] for key in keys}
    return {
        "photos": len(keys),
        "results": sum(per_photo.values()),
        "photos_with_exactly_one_result": sum(1 for photo in expected if per_photo.get(photo) == 1),
        "left_in_incoming": len(keys_under(settings.incoming_prefix)),
        "filed_in_processed_or_failed": len(filed & {k.split("/", 1)[1] for k in keys}),
        "ok": set(per_photo) == expected
        and set(per_photo.values()) == {1}
        and filed >= {k.split("/", 1)[1] for k in keys}
        and not keys_under(settings.incoming_prefix),
    }


# ------------------------------------------------------------------------------------ 1. worker vs pipeline


def worker_vs_pipeline(stack: RunningStack, template: Template, sorter: Sorter, rounds: int) -> dict[str, Any]:
    from bench import corpus as corpus_module
    from bench.pipeline import pipeline_memory
    from refund_sorter.config import get_settings
    from refund_sorter.jobs.chunks import Chunk
    from refund_sorter.jobs.worker import classify_chunk
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.storage.jobs_table import JobsTable

    corpus = corpus_module.ensure()
    datas = corpus.read_all()
    names = [f"incoming/{spec.name}" for spec in corpus.specs]
    pipeline_memory(sorter, datas[:32])  # warm: the session, the thread pools, the allocator
    pipeline_s: list[float] = []
    worker_s: list[float] = []
    cpu: dict[str, list[float]] = {"pipeline": [], "worker": [], "moto_during_worker": []}
    reports = []
    for number in range(rounds):
        before = time.process_time()
        seconds, results = pipeline_memory(sorter, datas)
        cpu["pipeline"].append(time.process_time() - before)
        assert len(results) == len(datas)
        pipeline_s.append(seconds)
        fresh_stack(stack, template)
        upload(list(zip(names, datas, strict=True)))
        settings = get_settings()
        bucket = PhotoBucket(settings)
        chunk = Chunk(index=0, classify=list(bucket.incoming()))
        store, jobs = DynamoResultStore(settings.table), JobsTable(settings.jobs_table)
        started, before, moto_before = time.perf_counter(), time.process_time(), children_cpu_seconds()
        report = classify_chunk(sorter, store, bucket, jobs, chunk)
        worker_s.append(time.perf_counter() - started)
        cpu["worker"].append(time.process_time() - before)
        cpu["moto_during_worker"].append(children_cpu_seconds() - moto_before)
        assert report.classified + report.needs_review + report.failed == len(datas), report
        assert check_each_photo_once(names)["ok"]
        reports.append(report.as_dict() | {"errors": report.errors[:2]})
        rates = f"pipeline {len(datas) / pipeline_s[-1]:.1f}/s, worker {len(datas) / worker_s[-1]:.1f}/s"
        log(f"round {number + 1}: {rates}")
    pipeline_rate = len(datas) / statistics.median(pipeline_s)
    worker_rate = len(datas) / statistics.median(worker_s)
    return {
        "corpus": {"key": corpus.folder.name, "photos": len(datas), "mb": round(sum(map(len, datas)) / 1e6, 1)},
        "rounds": rounds,
        "pipeline_in_memory_photos_per_s": round(pipeline_rate, 2),
        "worker_on_moto_photos_per_s": round(worker_rate, 2),
        "worker_vs_pipeline": round(worker_rate / pipeline_rate, 3),
        # CPU per photo: what the worker's own process spends (what a Lambda worker pays for) vs the pipeline;
        # moto's share is S3's and DynamoDB's work, done on this machine's CPUs here and elsewhere in AWS.
        "cpu_ms_per_photo": {k: round(1000 * statistics.median(v) / len(datas), 1) for k, v in cpu.items()},
        "pipeline_vs_worker_cpu": round(statistics.median(cpu["pipeline"]) / statistics.median(cpu["worker"]), 3),
        "pipeline_seconds": [round(s, 2) for s in pipeline_s],
        "worker_seconds": [round(s, 2) for s in worker_s],
        "last_worker_report": reports[-1],
    }


# ------------------------------------------------------------------------------------------------ 2. a night


def generated_photos(count: int) -> list[tuple[str, bytes]]:
    """Small distinct JPEGs (a colour field and a few shapes), the way a scanner station names them."""
    from PIL import Image, ImageDraw

    photos = []
    for i in range(count):
        image = Image.new("RGB", (128, 96), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
        draw = ImageDraw.Draw(image)
        draw.rectangle((i % 50, i % 30, 60 + i % 60, 50 + i % 40), fill=((i * 13) % 256, 80, 160))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        photos.append((f"incoming/station-{i % 7}/{i:06d}.jpg", buffer.getvalue()))
    return photos


def night(stack: RunningStack, template: Template, photos: list[tuple[str, bytes]], workers: int) -> dict[str, Any]:
    from refund_sorter_cli.stepfunctions import LocalLambdas, LocalStateMachine, cpu_share

    fresh_stack(stack, template)
    upload_s = upload(photos)
    moments: dict[str, float] = {}
    first_chunk: list[float] = []

    def clock(event: Event) -> None:
        now = time.perf_counter()
        if event.kind == "TaskScheduled" and event.state == "Plan":
            moments.setdefault("plan_started", now)
        elif event.kind == "TaskSucceeded" and event.state == "Plan":
            moments["plan_done"] = now
        elif event.kind == "MapRunStarted":
            moments["map_started"] = now
        elif event.kind == "ChildSucceeded" and not first_chunk:
            first_chunk.append(now)
        elif event.kind == "MapRunFinished":
            moments["map_done"] = now
        elif event.kind == "StateEntered" and event.state in {"NightDone", "NightFailed"}:
            moments["export_done"] = now

    log_dir = ROOT / "out" / "bench-night" / f"workers-{workers}"
    shutil.rmtree(log_dir, ignore_errors=True)  # this night's function logs only
    with LocalLambdas(template, log_dir=log_dir, environment=cpu_share(workers)) as lambdas:
        machine = LocalStateMachine(template, lambdas, workers=workers, on_event=clock)
        started = time.perf_counter()
        execution = machine.start({"source": "bench"})
        total = time.perf_counter() - started
    output = execution.output or {}
    summary = output.get("export", {}).get("summary", {})
    check = check_each_photo_once([key for key, _ in photos])
    count = len(photos)
    return {
        "workers": workers,
        "status": execution.status,
        "photos": count,
        "chunks": summary.get("chunks"),
        "upload_seconds_not_counted": round(upload_s, 1),
        "plan_seconds": _between(moments, "plan_started", "plan_done"),
        "plan_seconds_in_handler": output.get("plan", {}).get("seconds"),  # without the cold start
        "export_seconds_in_handler": summary.get("seconds"),
        "map_seconds": _between(moments, "map_started", "map_done"),
        "export_seconds": _between(moments, "map_done", "export_done"),
        "error": execution.error,
        "total_seconds": round(total, 2),
        "photos_per_s": round(count / total, 2),
        "map_photos_per_s": round(count / map_s, 2)
        if (map_s := _between(moments, "map_started", "map_done"))
        else None,
        "first_chunk_done_after_seconds": round(first_chunk[0] - moments["map_started"], 2) if first_chunk else None,
        "counts": summary.get("counts"),
        "check": check,
    }


def _between(moments: dict[str, float], start: str, end: str) -> float | None:
    return round(moments[end] - moments[start], 2) if start in moments and end in moments else None


# ------------------------------------------------------------------------------------------------ report


def markdown(results: dict[str, Any]) -> str:
    worker = results.get("worker")
    lines = [
        "# The nightly fan-out: benchmark",
        "",
        f"`{results['command']}` — {results['when']}, {results['machine']}. One moto server (its own process, on the "
        "same CPUs); every S3/DynamoDB call is a local HTTP request.",
        "",
    ]
    if worker:
        met = "yes" if worker["worker_vs_pipeline"] >= TARGET_WORKER_VS_PIPELINE else "**no**"
        lines += [
            "## The worker at the pipeline's speed",
            "",
            f"Bench corpus {worker['corpus']['key']} ({worker['corpus']['photos']} phone-like JPEGs, "
            f"{worker['corpus']['mb']} MB), medians of {worker['rounds']} interleaved rounds "
            f"(measured {worker.get('measured', results['when'])}).",
            "",
            "| | photos/s |",
            "|---|---:|",
            "| in-memory pipeline (`Sorter.classify` → MemoryResultStore) | "
            f"{worker['pipeline_in_memory_photos_per_s']} |",
            f"| one nightly worker on moto (`classify_chunk`) | {worker['worker_on_moto_photos_per_s']} |",
            f"| **worker / pipeline** (goal ≥ {TARGET_WORKER_VS_PIPELINE}) | **{worker['worker_vs_pipeline']}** "
            f"({met}) |",
            "",
            "CPU ms per photo (medians): "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in worker["cpu_ms_per_photo"].items())
            + f". Pipeline CPU ÷ worker-process CPU: {worker['pipeline_vs_worker_cpu']} — the worker process itself "
            "(what a Lambda worker pays for) stays close to the pipeline; the rest of the gap in photos/s is moto "
            "serving S3 and DynamoDB on the same two vCPUs, work that AWS does elsewhere.",
            "",
        ]
    nights = results.get("nights", [])
    if nights:
        lines += [
            f"## A night of {nights[0]['photos']:,} generated small JPEGs through the state machine",
            "",
            "| local workers | status | chunks | plan s | map s | export s | total s | photos/s "
            "| exactly one Result each, all in processed/ or failed/ | measured |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for n in nights:
            check = n["check"]
            verdict = (f"{'yes' if check['ok'] else '**no**'} ({check['photos_with_exactly_one_result']:,}/"
                       f"{check['photos']:,}; {check['left_in_incoming']} left in incoming/)")  # fmt: skip
            lines.append(
                f"| {n['workers']} | {n['status']} | {n['chunks']} | {n['plan_seconds']} | {n['map_seconds']} | "
                f"{n['export_seconds']} | {n['total_seconds']} | {n['photos_per_s']} | {verdict} | "
                f"{n.get('measured', results['when'])} |"
            )
        lines.append("")
    lines += [f"- {note}" for note in results.get("notes", [])]
    return "\n".join(lines) + "\n"


def keep_what_was_not_run(results: dict[str, Any]) -> None:
    """Parts skipped this time (``--skip-worker``, other ``--workers``) keep their last measurement, dated."""
    if not RESULTS_JSON.is_file():
        return
    previous = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
    if "worker" not in results and "worker" in previous:
        results["worker"] = previous["worker"] | {"measured": previous["worker"].get("measured", previous["when"])}
    ran = {n["workers"] for n in results.get("nights", [])}
    kept = [n | {"measured": n.get("measured", previous["when"])} for n in previous.get("nights", [])
            if n["workers"] not in ran]  # fmt: skip
    results["nights"] = sorted(kept + results.get("nights", []), key=lambda n: n["workers"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20_000, help="photos in the generated night (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of worker vs pipeline")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker counts to run")
    parser.add_argument("--skip-worker", action="store_true", help="only the night")
    parser.add_argument("--skip-night", action="store_true", help="only worker vs pipeline")
    parser.add_argument("--moto-port", type=int, default=0, help="the moto server's port (default: a free one)")
    args = parser.parse_args()

    from refund_sorter.vision.sorter import get_sorter
    from refund_sorter_cli.template import Template

    began = time.perf_counter()
    template = Template()
    results: dict[str, Any] = {
        "command": "make bench-night",
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} vCPU {platform.processor() or platform.machine()}",
        "notes": [],
    }
    with common.local_stack("bench-night", moto_port=args.moto_port) as stack:
        if not args.skip_worker:
            log("worker vs in-memory pipeline on the bench corpus")
            results["worker"] = worker_vs_pipeline(stack, template, get_sorter(), args.rounds)
            results["worker"]["measured"] = results["when"]
            write(results, began)  # each part is kept as soon as it is measured
        if not args.skip_night:
            photos = generated_photos(args.photos)
            results["nights"] = []
            for workers in args.workers:
                log(f"a night of {len(photos):,} photos with {workers} local worker(s)")
                results["nights"].append(night(stack, template, photos, workers) | {"measured": results["when"]})
                log(json.dumps({k: v for k, v in results["nights"][-1].items() if k != "counts"}))
                write(results, began)
    print(markdown(write(results, began)))
    return 0


def write(results: dict[str, Any], began: float) -> dict[str, Any]:
    """bench/fanout.{json,md} with what has been measured so far (and what earlier runs measured of the rest)."""
    results = dict(results)
    results["seconds"] = round(time.perf_counter() - began, 1)
    keep_what_was_not_run(results)
    results["notes"] = [
        *results["notes"],
        f"Whole run {results['seconds']} s. The local workers are processes on this machine's {os.cpu_count()} "
        "vCPUs, which they share with moto and the runner (each gets its share of onnxruntime threads): more local "
        "workers cannot add CPU here. In AWS each worker is a Lambda with vCPUs of its own; docs/scale.md works "
        "out a night there.",
    ]
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    RESULTS_MD.write_text(markdown(results), encoding="utf-8")
    return results


if __name__ == "__main__":
    raise SystemExit(main())
