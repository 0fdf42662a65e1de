"""The nightly state machine's last step: the day's CSV, the night's summary, and the lease given back.

It runs after the Distributed Map whether the map succeeded or failed (the map's Catch leads here too), so a
bad night still gets its CSV and a summary that says what went wrong. The summary adds up the workers' chunk
reports as the map's ResultWriter exported them (``<run>/map/<map run id>/manifest.json`` and the
``SUCCEEDED_*``/``FAILED_*`` files it lists): counts per status and per department, the chunks that failed
after their retries (with the error Step Functions recorded), and the photos left for the next night.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from refund_sorter.jobs.nightly import write_export
from refund_sorter.jobs.plan import LEASE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.jobs_table import JobsTable

logger = logging.getLogger(__name__)

COUNTED = ("classified", "needs_review", "failed", "crashed", "already_done", "deferred", "left")
REPORTED_FAILED_CHUNKS = 20


@dataclass
class NightSummary:
    """What the night did, for people (``summary.json`` next to the manifest), the logs and the alarms."""

    run: str
    day: str
    status: str = "succeeded"  # | "tolerated_failures" (some chunks failed, within the map's threshold) | "failed"
    photos: int = 0
    chunks: int = 0
    chunks_succeeded: int = 0
    chunks_failed: int = 0
    chunks_not_run: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    departments: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # photos still in incoming/ for the next night: deferred, not reached, or in failed chunks
    failed_chunks: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    map_error: dict[str, str] | None = None
    export_key: str = ""
    export_rows: int = 0
    summary_key: str = ""
    lease_released: bool = False
    seconds: float = 0.0
    # The learning loop: how much of the night was sorted without a person, and how that moves night by night.
    auto_sorted_share: float | None = None  # classified / (classified + needs_review); None: nothing classified
    review_rate: float | None = None  # needs_review / (classified + needs_review)
    review_backlog: int = 0  # Results waiting for a person once the night is done (all nights)
    model_versions: dict[str, int] = field(default_factory=dict)  # photos per model the night's Results name
    model_version: str | None = None  # the one that sorted most of them
    trend: list[dict[str, Any]] = field(default_factory=list)  # this night and the ones before, oldest first

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_night(store: ResultStore, bucket: PhotoBucket, jobs: JobsTable, state: dict[str, Any]) -> NightSummary:
    """Sum up the night, write the CSV and ``summary.json``, release the lease.

    Parameters
    ----------
    state
        The state machine's state after the map: ``plan`` (the plan step's output), and ``map`` (the map's
        ResultWriter details) or ``map_error`` (``{"Error", "Cause"}`` when the map failed).
    """
    began = time.monotonic()
    plan = state["plan"]
    summary = NightSummary(run=plan["run"], day=plan["day"], photos=plan["photos"], chunks=plan["chunks"])
    summary.map_error = state.get("map_error")
    counts: Counter[str] = Counter()
    departments: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for status, entry in _map_results(bucket, plan["results_prefix"]):
        if status == "SUCCEEDED":
            report = _output(entry)
            summary.chunks_succeeded += 1
            counts.update({name: int(report.get(name, 0)) for name in COUNTED})
            departments.update(report.get("departments", {}))
            versions.update(report.get("model_versions", {}))
            summary.errors.extend(report.get("errors", [])[: max(0, 20 - len(summary.errors))])
        elif status == "FAILED":
            summary.chunks_failed += 1
            chunk = json.loads(entry.get("Input") or "{}").get("chunk", {})
            counts["in_failed_chunks"] += int(chunk.get("photos", 0))
            if len(summary.failed_chunks) < REPORTED_FAILED_CHUNKS:
                summary.failed_chunks.append(
                    {"chunk": chunk.get("index"), "photos": chunk.get("photos"), "error": entry.get("Error"),
                     "cause": str(entry.get("Cause", ""))[:500]}
                )  # fmt: skip
    summary.chunks_not_run = max(0, summary.chunks - summary.chunks_succeeded - summary.chunks_failed)
    summary.counts = dict(counts)
    summary.departments = dict(sorted(departments.items()))
    summary.waiting = counts["deferred"] + counts["left"] + counts["in_failed_chunks"]
    if summary.map_error is not None:
        summary.status = "failed"
    elif summary.chunks_failed or summary.chunks_not_run:
        summary.status = "tolerated_failures"
    summary.model_versions = dict(versions.most_common())
    summary.model_version = versions.most_common(1)[0][0] if versions else None
    sorted_or_asked = counts["classified"] + counts["needs_review"]
    if sorted_or_asked:
        summary.auto_sorted_share = round(counts["classified"] / sorted_or_asked, 4)
        summary.review_rate = round(counts["needs_review"] / sorted_or_asked, 4)
    summary.review_backlog = store.count_queue()
    summary.export_key, summary.export_rows = write_export(store, bucket, summary.day)
    summary.summary_key = plan["summary_key"]
    summary.trend = record_trend(bucket, summary)
    summary.lease_released = jobs.release_lease(LEASE, plan["execution"])
    summary.seconds = round(time.monotonic() - began, 3)
    bucket.put_bytes(summary.summary_key, json.dumps(summary.as_dict(), indent=2).encode())
    logger.info("night finished", extra=summary.as_dict())
    return summary


# One small file the nights append to (the Export step runs one night at a time: the run's lease), so neither the
# summary nor the review page lists runs/ to show the trend. Its own key (settings.trend_key), so the API may read
# it and nothing else the nights write.
TREND_NIGHTS = 30
TREND_FIELDS = ("auto_sorted_share", "review_rate", "review_backlog", "model_version")


def trend_key(bucket: PhotoBucket) -> str:
    return bucket.settings.trend_key


def read_trend(bucket: PhotoBucket) -> list[dict[str, Any]]:
    """The last nights' entries, oldest first (``[]`` before the first night, or if the file is unreadable)."""
    from refund_sorter.errors import NotFoundError

    try:
        nights = json.loads(bucket.get_bytes(trend_key(bucket)))
    except NotFoundError:
        return []
    except ValueError:
        logger.warning("%s is not JSON: the trend starts again", trend_key(bucket))
        return []
    return [n for n in nights if isinstance(n, dict)] if isinstance(nights, list) else []


def record_trend(bucket: PhotoBucket, summary: NightSummary) -> list[dict[str, Any]]:
    """Add this night to the trend file and return the last :data:`TREND_NIGHTS` nights, oldest first. A night
    run again (a rerun of the same execution) replaces its own entry."""
    night = {"day": summary.day, "run": summary.run, "photos": summary.photos}
    night |= {name: getattr(summary, name) for name in TREND_FIELDS}
    nights = [n for n in read_trend(bucket) if n.get("run") != summary.run] + [night]
    nights = nights[-TREND_NIGHTS:]
    bucket.put_bytes(trend_key(bucket), json.dumps(nights, indent=1).encode())
    return nights


def _map_results(bucket: PhotoBucket, results_prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(status, entry) for every child execution the map's ResultWriter exported under ``results_prefix``."""
    for key in bucket.keys(results_prefix.rstrip("/") + "/"):
        if not key.endswith("/manifest.json"):
            continue
        manifest = json.loads(bucket.get_bytes(key))
        for status, files in manifest.get("ResultFiles", {}).items():
            for file in files:
                for entry in _entries(bucket.get_bytes(file["Key"])):
                    yield status, entry


def _entries(data: bytes) -> Iterator[dict[str, Any]]:
    """A result file's entries: a JSON array, or JSON Lines (ResultWriter's ``OutputType: JSONL``)."""
    text = data.decode("utf-8").strip()
    if not text:
        return
    if text.startswith("["):
        yield from json.loads(text)
    else:
        yield from (json.loads(line) for line in text.splitlines() if line.strip())


def _output(entry: dict[str, Any]) -> dict[str, Any]:
    """A child's output: the ``Output`` JSON string of a full record, or the entry itself (``COMPACT``)."""
    if "ExecutionArn" in entry and "Output" in entry:
        output: dict[str, Any] = json.loads(entry["Output"] or "{}")
        return output
    return entry
