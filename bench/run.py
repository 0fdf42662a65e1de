"""``make bench``: one run, one corpus, every number the performance issue asks for.

Run from the repo root: ``.venv/bin/python -m bench.run`` (``--help`` for options). Writes
``bench/results.json`` (everything, raw) and ``bench/results.md`` (the table), and prints the table.

Everything is measured in the same process run on the same corpus (see :mod:`bench.corpus`), and the
headline numbers are ratios against the naive baseline measured in that very run, because the machines are
small (2 vCPUs) and shared: absolute numbers move by tens of per cent between runs, ratios much less. The
fast measurements are repeated (``--repeats``, interleaved) and the median is reported.

One module per measurement, called here in order: :mod:`bench.naive`, :mod:`bench.pipeline` (the floor and the
batch pipeline), :mod:`bench.int8`, :mod:`bench.torch_comparison`, then on the local stack
:mod:`bench.nightly_moto`, :mod:`bench.predict`, :mod:`bench.cold_start`, :mod:`bench.snapstart`; then
:mod:`bench.cost` and :mod:`bench.layer`; :mod:`bench.report` writes the verdicts and the table.

Servers: the local stack the tests use (``refund-sorter local`` in a child process on ports the OS picks, so
moto's request handling does not share our GIL); it is stopped before the run ends, also on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench import corpus as corpus_module
from bench import snapstart
from bench.cold_start import cold_start
from bench.common import ROOT, local_stack, log, parallelism
from bench.cost import cost
from bench.int8 import int8_agreement
from bench.layer import layer_size
from bench.naive import agreement, naive
from bench.nightly_moto import batch_on_moto
from bench.pipeline import decode_stats, measure_core, summarise
from bench.predict import predict_warm
from bench.report import markdown, verdicts
from bench.torch_comparison import onnx_logits, torch_eager

if TYPE_CHECKING:
    from refund_sorter.vision.sorter import Sorter

RESULTS_JSON: Final = ROOT / "bench" / "results.json"
RESULTS_MD: Final = ROOT / "bench" / "results.md"
INT8_MODEL: Final = ROOT / "out" / "model" / "efficientnet_lite0.int8.onnx"  # tools/model/quantize_int8.py


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the fast measurements")
    parser.add_argument("--naive-images", type=int, default=0, help="naive baseline on the first N photos (0 = all)")
    parser.add_argument("--predict-requests", type=int, default=50)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--no-aws", action="store_true", help="skip everything that needs the moto server")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915 - one measurement after the other, in order
    from refund_sorter.config import get_settings
    from refund_sorter.vision.classifier import Classifier
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter_cli.template import Template

    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python -m bench.run", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "repeats": args.repeats,
    }
    corpus = corpus_module.ensure()
    datas = corpus.read_all()
    results["corpus"] = corpus.summary([len(d) for d in datas])
    log(f"corpus {corpus.folder.name}: {len(datas)} photos, {results['corpus']['file_mb']['total']} MB")

    for key in [k for k in os.environ if k.startswith("REFUND_SORTER_")]:
        del os.environ[key]  # the product's defaults, whatever the shell says
    get_settings.cache_clear()
    settings = get_settings()
    sorter = Sorter(settings)
    sorter.classifier.warm_up()
    int8_path = INT8_MODEL
    int8 = Classifier(int8_path, settings.intra_op_threads) if int8_path.is_file() else None
    if int8 is not None:
        int8.warm_up()
    results["pipeline_settings"] = {
        "decode_workers": sorter.workers,
        "intra_op_threads": settings.intra_op_threads,
        "batch_size": settings.batch_size,
        "model": settings.model_path.name,
        "model_version": sorter.model_version,
    }

    naive_datas = datas[: args.naive_images] if args.naive_images else datas
    log(f"naive baseline over {len(naive_datas)} photos (the slow one)")
    results["naive"] = naive(naive_datas, settings.model_path)

    runs, crops, decode_ms, probs, batch_results = measure_core(datas, sorter, int8, args.repeats)
    results["runs_seconds"] = runs
    results["decode_ms_per_photo"] = decode_stats(decode_ms, datas)
    results["naive"] |= agreement(results["naive"].pop("logits"), probs, sorter.taxonomy)
    results["batch_labels_match_floor"] = [r.label for r in batch_results] == [
        sorter.taxonomy.labels[int(i)] for i in probs.argmax(axis=1)
    ]
    results["summary"] = summarise(results, runs, len(datas), sorter.workers)

    if int8 is not None:
        log("int8 agreement")
        results["int8"] = int8_agreement(probs, int8, crops, sorter.taxonomy, settings.confidence_threshold)
        results["int8"]["speedup_inference"] = (
            results["summary"]["infer_fp32_ms_per_image"] / results["summary"]["infer_int8_ms_per_image"]
        )
        results["int8"]["speedup_pipeline"] = (
            results["summary"]["batch_int8_images_per_s"] / results["summary"]["batch_images_per_s"]
        )
    else:
        results["int8"] = {"skipped": f"no {int8_path.name}"}

    if not args.no_torch:
        log("PyTorch eager (.venv-model)")
        results["torch"] = torch_eager(crops, onnx_logits(sorter.classifier, crops), corpus.folder)
        if "images_per_s" in results["torch"]:
            s = results["summary"]
            s["torch_pipeline_images_per_s"] = 1000 / (
                s["decode_pool_ms_per_image"] + 1000 / results["torch"]["images_per_s"]
            )

    if not args.no_aws:
        aws_measurements(results, sorter, datas, corpus, args)

    template = Template()
    batch_memory = template.function("ClassifyChunkFunction").memory
    summary = results["summary"]
    results["cost"] = cost(
        1 / summary["batch_images_per_s"], summary["cpu_ms_per_image"]["pipeline"] / 1000, batch_memory
    )
    results["cost"]["from"] = "the batch pipeline → MemoryResultStore rows (CPU time and wall time per photo)"
    log("layer size")
    results["layer"] = layer_size()
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["machine"]["cpus_available_at_end"] = parallelism()
    results["seconds"] = time.perf_counter() - started
    results["targets"] = verdicts(results)
    return results


def aws_measurements(
    results: dict[str, Any], sorter: Sorter, datas: list[bytes], corpus: corpus_module.Corpus, args: argparse.Namespace
) -> None:
    """Everything that needs S3 and DynamoDB, on one local stack (made with the template's bucket and tables)."""
    from refund_sorter_cli.local_stack import function_environment
    from refund_sorter_cli.template import Template

    twelve_mp = [i for i, s in enumerate(corpus.specs) if s.width * s.height >= 12_000_000]
    pick = sorted(twelve_mp, key=lambda i: len(datas[i]))[len(twelve_mp) // 2]  # the median-sized 12 MP photo
    photo = datas[pick]
    spec = corpus.specs[pick]
    with local_stack("bench") as stack:
        template = Template()
        log("nightly batch on moto")
        results["batch_moto"] = batch_on_moto(sorter, datas, [s.name for s in corpus.specs])
        log(f"warm predict: {args.predict_requests} requests")
        results["predict_warm"] = predict_warm(photo, args.predict_requests, warmup=5)
        results["predict_warm"]["photo"] = f"{spec.name} ({spec.width}×{spec.height}, q{spec.quality})"
        log(f"cold start: {args.cold_runs} fresh processes")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUND_SORTER_", "POWERTOOLS_"))}
        env |= stack.aws_environment | function_environment(template, "PredictFunction")
        results["cold_start"] = cold_start(env, photo, args.cold_runs)
        results["cold_start"]["photo"] = results["predict_warm"]["photo"]
        log(f"SnapStart, emulated: {args.cold_runs} fresh processes per mode")
        results["snapstart"] = snapstart.measure(env, photo, args.cold_runs)


def machine() -> dict[str, Any]:
    import onnxruntime
    import PIL

    model = ""
    with contextlib.suppress(OSError):
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "load_average_at_start": os.getloadavg(),
        "cpus_available_at_start": parallelism(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    RESULTS_JSON.write_text(json.dumps(results, indent=1, default=str) + "\n")
    table = markdown(results)
    RESULTS_MD.write_text(table)
    log(f"wrote {RESULTS_JSON.relative_to(ROOT)} and {RESULTS_MD.relative_to(ROOT)}")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
