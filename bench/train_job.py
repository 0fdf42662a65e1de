"""Training on the stack, before and after it became a job: the same labelled photos, the same moto server.

- ``in-CLI (before)``: what ``refund-sorter train`` did in its own process: decode every labelled photo with the
  Sorter, fit, draw the report with matplotlib (main's head_report, PNGs), publish;
- ``embed at arrival``: EmbedLabelledFunction's handler on each photo's S3 notification (the cost moved to
  arrival, per photo);
- ``TrainFunction``: its handler, reading the recorded features, fitting, writing the SVG report, publishing.

Both functions run as the CLI runs them, through :class:`refund_sorter_cli.stepfunctions.LocalLambdas` (a
process per function; TrainFunction's time includes that process's cold start).

Run: ``.venv/bin/python -m bench.train_job`` (needs matplotlib, a dev dependency, for the "before" report and
git for main's head_report.py) → bench/train_job.json
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CLOTHING = ROOT / "tests" / "fixtures" / "clothing"


def main() -> int:
    from bench.common import local_stack

    with local_stack("train-job"):
        numbers = measure()
    (ROOT / "bench" / "train_job.json").write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(numbers, indent=2))
    return 0


def measure() -> dict[str, object]:
    from refund_sorter.config import get_settings
    from refund_sorter.jobs.embed_labelled import backbone_sorter
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter_cli.local_stack import apply_function_environment, create_resources
    from refund_sorter_cli.stepfunctions import LocalLambdas
    from refund_sorter_cli.template import Template
    from refund_sorter_cli.training import embed
    from refund_sorter_training.admin import ModelAdmin
    from refund_sorter_training.fit import Labelled, fit

    template = Template()
    create_resources(template)
    apply_function_environment(template, "TrainFunction")
    settings = get_settings()
    bucket = PhotoBucket(settings)
    photos = sorted(CLOTHING.glob("*/*.jpg"))
    keys = [f"labelled/{p.parent.name}/{p.name}" for p in photos]
    for photo, key in zip(photos, keys, strict=True):
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=photo.read_bytes())
    sorter = backbone_sorter(settings)
    list(sorter.classify([bucket.photo(bucket.head(keys[0]))]))  # warm: the model is loaded in both paths

    # before: in the CLI process, decode all, fit, matplotlib report, publish
    old_report = _main_head_report()
    started = time.perf_counter()
    stored = [bucket.head(key) for key in keys]
    done, features, _, _ = embed(sorter, (bucket.photo(s) for s in stored))
    department = {bucket.uri(s.key): s.key.split("/")[1] for s in stored}
    head = fit(Labelled(features, [department[p.source] for p in done]), backbone="bench", target_precision=0.98,
               gate=0.5, sources={})  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        head.save(Path(out))
        old_report.write_report(head, Path(out))
        ModelAdmin(settings).publish(Path(out))
    before = time.perf_counter() - started

    # after: each photo embedded as it arrives (one notification per photo), then the training job
    event = json.loads((ROOT / "events" / "s3-object-created.json").read_text(encoding="utf-8"))
    (record,) = event["Records"]
    arrival = []
    with LocalLambdas(template, log_dir=Path(tempfile.gettempdir()) / "bench-train-job") as lambdas:
        lambdas.invoke("EmbedLabelledFunction", {"embed_missing": False, "Records": []})  # its cold start
        for s in stored:
            one = record | {"s3": record["s3"] | {"object": {"key": s.key, "eTag": s.etag, "size": s.size}}}
            started = time.perf_counter()
            assert lambdas.invoke("EmbedLabelledFunction", {"Records": [one]})["embedded"] == 1
            arrival.append(time.perf_counter() - started)
        started = time.perf_counter()
        summary = lambdas.invoke("TrainFunction", {"activate": False})  # its cold start included
        after = time.perf_counter() - started
    assert summary["ok"] and summary["labelled"] == len(keys), summary
    arrival.sort()
    return {
        "photos": len(keys),
        "departments": 4,
        "in_cli_before_seconds": round(before, 2),
        "train_function_seconds": round(after, 2),
        "train_function_fit_and_publish_seconds_reported": summary["seconds"],
        "embed_at_arrival_ms_per_photo_median": round(1000 * arrival[len(arrival) // 2], 1),
        "embed_at_arrival_ms_per_photo_mean": round(1000 * sum(arrival) / len(arrival), 1),
        "machine": f"{os.cpu_count()} CPUs, shared; moto in a child process (refund-sorter local)",
    }


def _main_head_report() -> ModuleType:
    """main's head_report.py (matplotlib PNGs), as the "before" path drew its pictures."""
    source = subprocess.run(
        ["git", "show", "main:client/refund_sorter_cli/head_report.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "main_head_report.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("main_head_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main())
