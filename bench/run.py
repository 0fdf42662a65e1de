"""``make bench``: one run, one corpus, every number the performance issue asks for.

Run from the repo root: ``.venv/bin/python -m bench.run`` (``--help`` for options). Writes
``bench/results.json`` (everything, raw) and ``bench/results.md`` (the table), and prints the table.

Everything is measured in the same process run on the same corpus (see :mod:`bench.corpus`), and the
headline numbers are ratios against the naive baseline measured in that very run, because the machines are
small (2 vCPUs) and shared: absolute numbers move by tens of per cent between runs, ratios much less. The
fast measurements are repeated (``--repeats``, interleaved) and the median is reported.

Servers: one moto server (``moto.server.ThreadedMotoServer``) on 127.0.0.1 at a free port, in a child
process so its request handling does not share our GIL; it is stopped before the run ends, also on errors.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench import corpus as corpus_module
from refund_sorter_cli.net import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from refund_sorter.config import Settings
    from refund_sorter.vision.classifier import Classifier
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter.vision.taxonomy import Taxonomy

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS_JSON: Final = ROOT / "bench" / "results.json"
RESULTS_MD: Final = ROOT / "bench" / "results.md"
MODEL_VENV_PYTHON: Final = ROOT / ".venv-model" / "bin" / "python"
LAYER_DIR: Final = ROOT / ".aws-sam" / "build" / "ModelLayer"

# AWS Lambda x86_64 list prices (us-east-1, first pricing tier), as published on aws.amazon.com/lambda/pricing.
PRICE_PER_GB_SECOND: Final = 0.0000166667
PRICE_PER_REQUEST: Final = 0.20 / 1_000_000
# Lambda allocates CPU in proportion to memory: 1,769 MB is one vCPU's worth (AWS documentation).
MB_PER_VCPU: Final = 1769
MEASURED_VCPUS: Final = os.cpu_count() or 1

TARGETS: Final = {
    "batch_vs_naive": 6.0,  # batch pipeline ≥ 6× naive images/s
    "batch_vs_floor": 1.3,  # batch pipeline within 1.3× of the floor (time per image)
    "predict_p50_ms": 25.0,
    "cold_start_ms": 400.0,
    "layer_mb": 120.0,
    "usd_per_1000": 0.002,
}
INT8_MIN_CATEGORY_AGREEMENT: Final = 0.98
INFERENCE_BATCH: Final = 16
COLD_HEAVY_PACKAGES: Final = (
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "botocore",
    "boto3",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "onnxruntime",
    "numpy",
    "PIL",
    "urllib3",
    "refund_sorter",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


# ----------------------------------------------------------------------------------------------- the naive baseline


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


# --------------------------------------------------------------------------------------------------- the floor


def decode_all(datas: list[bytes], settings: Settings, workers: int) -> tuple[float, list[np.ndarray], list[float]]:
    """The product's loader over the corpus; ``workers`` threads (1: sequential). Returns seconds, crops, ms each."""
    from refund_sorter.vision.images import load_image

    def one(data: bytes) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        crop = load_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        return crop, (time.perf_counter() - start) * 1000

    started = time.perf_counter()
    if workers == 1:
        done = [one(d) for d in datas]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(one, datas))
    seconds = time.perf_counter() - started
    return seconds, [c for c, _ in done], [ms for _, ms in done]


def infer_all(
    classifier: Classifier, crops: list[np.ndarray], batch: int = INFERENCE_BATCH
) -> tuple[float, np.ndarray]:
    """Batched inference alone on pre-decoded crops: ``to_model_input`` + ``Classifier.probabilities``."""
    from refund_sorter.vision.images import to_model_input

    classifier.probabilities(to_model_input(crops[:batch]))  # warm
    started = time.perf_counter()
    out = [classifier.probabilities(to_model_input(crops[i : i + batch])) for i in range(0, len(crops), batch)]
    return time.perf_counter() - started, np.concatenate(out)


# ------------------------------------------------------------------------------------------ the product pipeline


def pipeline_memory(sorter: Sorter, datas: list[bytes]) -> tuple[float, list[Any]]:
    """``Sorter.classify`` over Photos read from memory, each Result stored in a ``MemoryResultStore``."""
    from refund_sorter.photos import Photo
    from tests.fakes import MemoryResultStore

    photos = [
        Photo(id=f"bench-{i:04d}", source=f"memory://corpus/{i:04d}.jpg", read=functools.partial(bytes, data))
        for i, data in enumerate(datas)
    ]
    store = MemoryResultStore()
    started = time.perf_counter()
    results = []
    for outcome in sorter.classify(photos):
        if outcome.result is None:
            raise RuntimeError(f"{outcome.photo.source}: {outcome.transient_error!r}")
        store.add(outcome.result)
        results.append(outcome.result)
    return time.perf_counter() - started, results


def measure_core(
    datas: list[bytes], sorter: Sorter, int8: Classifier | None, repeats: int
) -> tuple[dict[str, list[float]], list[np.ndarray], list[float], np.ndarray, list[Any]]:
    """The fast measurements, interleaved ``repeats`` times so that a noisy neighbour hits all of them alike."""
    from refund_sorter.vision.sorter import Sorter

    runs: dict[str, list[float]] = {
        k: [] for k in ("decode_1", "decode_pool", "infer_fp32", "infer_int8", "pipeline", "pipeline_int8")
    }
    crops: list[np.ndarray] = []
    decode_ms: list[float] = []
    probs = np.empty(0)
    results: list[Any] = []
    int8_sorter = Sorter(sorter.settings, classifier=int8, taxonomy=sorter.taxonomy) if int8 else None
    pipeline_memory(sorter, datas[: 2 * INFERENCE_BATCH])  # warm: thread pool, session, allocator

    def clocked(key: str, measure: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        cpu = time.process_time()
        out = measure()
        runs[key].append(out[0])
        runs.setdefault(f"cpu_{key}", []).append(time.process_time() - cpu)  # every thread of this process
        return out

    for repeat in range(repeats):
        log(f"core measurements, round {repeat + 1}/{repeats}")
        _, crops, decode_ms = clocked("decode_1", functools.partial(decode_all, datas, sorter.settings, 1))
        clocked("decode_pool", functools.partial(decode_all, datas, sorter.settings, sorter.workers))
        _, probs = clocked("infer_fp32", functools.partial(infer_all, sorter.classifier, crops))
        if int8 is not None:
            clocked("infer_int8", functools.partial(infer_all, int8, crops))
        _, results = clocked("pipeline", functools.partial(pipeline_memory, sorter, datas))
        if int8_sorter is not None:
            clocked("pipeline_int8", functools.partial(pipeline_memory, int8_sorter, datas))
    return runs, crops, decode_ms, probs, results


# -------------------------------------------------------------------------------------------------------- int8


def int8_agreement(
    fp32_probs: np.ndarray, int8: Classifier, crops: list[np.ndarray], taxonomy: Taxonomy, threshold: float
) -> dict[str, Any]:
    from refund_sorter.vision.images import to_model_input

    int8_probs = np.concatenate(
        [
            int8.probabilities(to_model_input(crops[i : i + INFERENCE_BATCH]))
            for i in range(0, len(crops), INFERENCE_BATCH)
        ]
    )
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


# ------------------------------------------------------------------------------------------------- moto server


MOTO_CHILD: Final = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
server.stop()
"""


@contextlib.contextmanager
def moto_server(port: int = 0) -> Iterator[str]:
    """A moto server on 127.0.0.1 in a child process; stopped (and reaped) on the way out, whatever happens."""
    port = port or free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", MOTO_CHILD, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def use_endpoint(endpoint: str) -> dict[str, str]:
    """Point this process's boto3 at the moto server (never real AWS); returns the variables set."""
    from refund_sorter.storage.clients import reset_clients

    variables = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(variables)
    os.environ.pop("AWS_PROFILE", None)
    reset_clients()
    return variables


def batch_on_moto(sorter: Sorter, datas: list[bytes], names: list[str]) -> dict[str, Any]:
    """Upload the corpus to incoming/ and time ``run_nightly`` (DynamoDB store, archive, CSV export)."""
    import boto3

    from refund_sorter.config import get_settings
    from refund_sorter.jobs.nightly import run_nightly
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter_cli.local_stack import function_environment
    from refund_sorter_cli.template import Template

    template = Template()
    for key, value in function_environment(template, "ClassifyChunkFunction").items():
        os.environ[key] = value
    get_settings.cache_clear()
    settings = get_settings()
    s3 = boto3.client("s3")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(
            pool.map(
                lambda kv: s3.put_object(Bucket=settings.bucket, Key=f"incoming/{kv[0]}", Body=kv[1]),
                zip(names, datas, strict=True),
            )
        )
    upload_seconds = time.perf_counter() - started
    # How long the calling thread waits on S3/DynamoDB per photo (classify_stored makes these calls between
    # batches, on the thread that also runs inference); the get_object reads run on the decode workers.
    waits: dict[str, float] = {}
    patched = [
        (DynamoResultStore, "get"),
        (DynamoResultStore, "add"),
        (PhotoBucket, "copy_to_archive"),
        (PhotoBucket, "delete_original"),
    ]
    originals = [getattr(owner, name) for owner, name in patched]
    for (owner, name), original in zip(patched, originals, strict=True):
        setattr(owner, name, clocked_method(original, f"{owner.__name__}.{name}", waits))
    try:
        report = run_nightly(sorter, DynamoResultStore(settings.table), PhotoBucket(settings))
    finally:
        for (owner, name), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)
    processed = report.processed
    return {
        "what": "refund_sorter.nightly.run_nightly on moto: list incoming/, get_object, classify, head + copy to "
        "processed/, DynamoDB put (conditional), delete, then the CSV export",
        "images": processed,
        "seconds": report.seconds,
        "images_per_s": processed / report.seconds if report.seconds else None,
        "upload_seconds_not_counted": round(upload_seconds, 2),
        "calling_thread_storage_ms_per_photo": {k: round(1000 * v / max(processed, 1), 1) for k, v in waits.items()},
        "report": report.as_dict() | {"errors": report.errors[:3]},
        "caveat": "moto runs on the same 2 vCPUs (its own process); every S3/DynamoDB call is a local HTTP request",
    }


def clocked_method(original: Callable[..., Any], key: str, totals: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - started

    return wrapper


# ------------------------------------------------------------------------------------------------ warm predict


def post_event(body: str) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for POST /predictions."""
    headers = {"Content-Type": "application/json"}
    return {
        "resource": "/predictions",
        "path": "/predictions",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/predictions",
            "httpMethod": "POST",
            "path": "/predictions",
            "stage": "local",
            "requestId": "bench",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "bench"},
            "accountId": "123456789012",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def downsized(data: bytes, longest: int = 1600) -> tuple[bytes, str]:
    """The photo as an app that resizes before uploading would send it: upright, ``longest`` px, quality 85."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (longest, longest))
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        upright.save(buffer, "JPEG", quality=85)
        return buffer.getvalue(), f"{upright.width}×{upright.height} JPEG q85"


def predict_warm(data: bytes, requests: int, warmup: int) -> dict[str, Any]:
    """The predict handler in this process, the photo inline (image_base64): p50/p95 against moto, then with the
    service's store swapped for a MemoryResultStore (the model's own latency)."""
    from refund_sorter.vision.images import load_image, to_model_input
    from refund_sorter_cli.local_stack import LambdaContext, apply_function_environment, load_handler
    from refund_sorter_cli.template import Template
    from tests.fakes import MemoryResultStore

    template = Template()
    apply_function_environment(template, "PredictFunction")
    event = post_event(json.dumps({"image_base64": base64.b64encode(data).decode()}))
    spec = template.function("PredictFunction")
    sink = Path(os.devnull).open("w")  # noqa: SIM115 - Powertools' logger binds its stream at import; closed below
    out: dict[str, Any] = {"photo_mb": round(len(data) / 1e6, 2), "requests": requests, "warmup": warmup}
    try:
        with contextlib.redirect_stdout(sink):  # the handler's log lines and metrics, not our output
            handler = load_handler(template, "PredictFunction")
            module: Any = sys.modules[handler.__module__]

            def timings(event: dict[str, Any] = event) -> list[float]:
                times = []
                for i in range(warmup + requests):
                    context = LambdaContext(template.physical_name("PredictFunction"), spec.memory, spec.timeout)
                    started = time.perf_counter()
                    reply = handler(event, context)
                    elapsed = (time.perf_counter() - started) * 1000
                    if reply["statusCode"] != 201:
                        raise RuntimeError(f"predict answered {reply['statusCode']}: {reply.get('body')}")
                    if i >= warmup:
                        times.append(elapsed)
                return times

            on_moto = timings()
            service = module.get_service()
            in_memory_service = type(service)(service.settings, service.sorter, store=MemoryResultStore())
            module.get_service = lambda: in_memory_service
            in_memory = timings()
            small = downsized(data)
            out["downsized_photo"] = f"{small[1]}, {len(small[0]) / 1e6:.2f} MB"
            on_small = timings(post_event(json.dumps({"image_base64": base64.b64encode(small[0]).decode()})))
            sorter = service.sorter
    finally:
        sink.close()
    for name, times in (("moto", on_moto), ("memory_store", in_memory), ("downsized_memory_store", on_small)):
        out[name] = {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95), "mean_ms": float(np.mean(times))}
    # Where a request's time goes (the same photo, in this process, median of repeats).
    text = event["body"]

    def med(fn: Callable[[], object], n: int = 15) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
        return median(times)

    crop = load_image(data, max_bytes=sorter.settings.max_image_bytes, max_pixels=sorter.settings.max_image_pixels)
    b64 = json.loads(text)["image_base64"]
    out["parts_ms"] = {
        "json_parse_body": med(lambda: json.loads(text)),
        "base64_decode": med(lambda: base64.b64decode(b64, validate=True)),
        "load_image": med(
            lambda: load_image(
                data, max_bytes=sorter.settings.max_image_bytes, max_pixels=sorter.settings.max_image_pixels
            )
        ),
        "inference_batch1": med(lambda: sorter.classifier.probabilities(to_model_input([crop]))),
    }
    return out


# -------------------------------------------------------------------------------------------------- cold start

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def cold_start(env: dict[str, str], data: bytes, runs: int, handler_dir: str = "functions/predict") -> dict[str, Any]:
    """Fresh processes (bench/cold_start.py) that import the handler and answer one POST; medians of ``runs``.
    ``handler_dir``: another copy of the handler, to measure a proposed change before making it."""
    with tempfile.TemporaryDirectory(prefix="refund-sorter-bench-") as tmp:
        event_path = Path(tmp) / "event.json"
        event_path.write_text(json.dumps(post_event(json.dumps({"image_base64": base64.b64encode(data).decode()}))))
        # The layer ships .pyc compiled for its Python (layers/model/Makefile); this shell may say
        # PYTHONDONTWRITEBYTECODE. So: bytecode in a cache under bench/corpus/ (gitignored), primed by one
        # unmeasured run, then every measured process reads it, as Lambda reads the layer's.
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(corpus_module.CORPUS_ROOT / "pycache")
        subprocess.run(
            [sys.executable, "bench/cold_start.py", str(event_path), str(Path(tmp) / "prime.json"), handler_dir],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples = []
        for i in range(runs):
            out_path = Path(tmp) / f"cold-{i}.json"
            spawned = time.time()
            subprocess.run(
                [sys.executable, "bench/cold_start.py", str(event_path), str(out_path), handler_dir],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stamps = json.loads(out_path.read_text())
            if stamps["status"] != 201:
                raise RuntimeError(f"cold start answered {stamps['status']}: {stamps.get('body')}")
            stamps["interpreter_start_ms"] = (stamps["process_started_wall"] - spawned) * 1000
            samples.append(stamps)
        # One more run under -X importtime, to see which packages the time goes to (it slows imports a little).
        traced = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "bench/cold_start.py",
                str(event_path),
                str(Path(tmp) / "traced.json"),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    return summarise_cold(samples, importtime_by_phase(traced.stderr))


def importtime_by_phase(stderr: str) -> dict[str, dict[str, float]]:
    """``-X importtime`` self times summed by top-level package, per driver phase (markers in stderr)."""
    phases: dict[str, dict[str, float]] = {}
    phase = "startup"
    for line in stderr.splitlines():
        if line.startswith("## phase "):
            phase = line.removeprefix("## phase ").strip()
            continue
        match = _IMPORT_LINE.match(line)
        if match:
            package = match[4].split(".")[0]
            totals = phases.setdefault(phase, {})
            totals[package] = totals.get(package, 0.0) + int(match[1]) / 1000
    return {
        p: {k: round(v, 1) for k, v in sorted(c.items(), key=lambda kv: -kv[1])[:12]}
        | {"_total": round(sum(c.values()), 1)}
        for p, c in phases.items()
    }


def part(name: str, sample: dict[str, Any]) -> float:
    return float(sample["parts"].get(name, 0.0))


def summarise_cold(samples: list[dict[str, Any]], by_package: dict[str, dict[str, float]]) -> dict[str, Any]:
    def med(get: Callable[[dict[str, Any]], float]) -> float:
        return round(median([get(s) for s in samples]), 1)

    parts = (
        "get_service_ms",
        "store_client_ms",
        "decode_ms",
        "import_onnxruntime_ms",
        "session_create_ms",
        "store_add_ms",
    )
    first_request = med(lambda s: s["first_request_ms"])
    summary = {
        "runs": len(samples),
        "interpreter_start_ms": med(lambda s: s["interpreter_start_ms"]),
        "import_handler_ms": med(lambda s: s["import_ms"]),
        "first_request_ms": first_request,
        "first_request_parts_ms": {p: med(functools.partial(part, p)) for p in parts}
        | {
            "first_inference": med(lambda s: s["first_inference_ms"]),
            "import_refund_sorter_pipeline": med(lambda s: s["import_pipeline_ms"]),
        },
        "second_request_ms": med(lambda s: s["second_request_ms"]),
        "import_plus_first_request_ms": med(lambda s: s["import_ms"] + s["first_request_ms"]),
        "total_to_first_answer_ms": med(lambda s: s["interpreter_start_ms"] + s["import_ms"] + s["first_request_ms"]),
        "loaded_by_handler_import": samples[0]["loaded_by_import"],
        "importtime_self_ms_by_package": by_package,
    }
    rest = first_request - sum(summary["first_request_parts_ms"].values())
    summary["first_request_parts_ms"]["rest (routing, validation, base64, taxonomy, Result, logging)"] = round(rest, 1)
    return summary


# ------------------------------------------------------------------------------------------- layer, torch, cost


def layer_size() -> dict[str, Any]:
    """The model layer as ``sam build`` left it (unzipped); else ask infra/tools.mk; else null with the reason."""
    if LAYER_DIR.is_dir():
        total = int(
            subprocess.run(["du", "-sb", str(LAYER_DIR)], capture_output=True, text=True, check=True).stdout.split()[0]
        )
        python = LAYER_DIR / "python"
        parts = {}
        if python.is_dir():
            listing = subprocess.run(
                ["du", "-sb", *sorted(str(p) for p in python.iterdir())], capture_output=True, text=True, check=True
            )
            sizes = sorted(
                ((int(n), Path(p).name) for n, p in (line.split("\t", 1) for line in listing.stdout.splitlines())),
                reverse=True,
            )
            parts = {name: round(n / 1e6, 1) for n, name in sizes[:10]}
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(LAYER_DIR.stat().st_mtime))
        return {
            "source": "du -sb .aws-sam/build/ModelLayer",
            "bytes": total,
            "mb": round(total / 1e6, 1),
            "mib": round(total / 2**20, 1),
            "built": built,
            "largest_mb": parts,
        }
    if (ROOT / "infra" / "tools.mk").is_file():
        run = subprocess.run(
            ["make", "-f", "infra/tools.mk", "BIN=.venv/bin", "PYTHON=python3", "layer-size"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"unzipped: (\d+) bytes", run.stdout)
        if found:
            total = int(found[1])
            return {"source": "make -f infra/tools.mk layer-size", "bytes": total, "mb": round(total / 1e6, 1)}
        return {
            "bytes": None,
            "reason": f"no built layer (make build first): {(run.stdout + run.stderr).strip()[-200:]}",
        }
    return {"bytes": None, "reason": "no .aws-sam/build/ModelLayer and no infra/tools.mk: run make build, then rerun"}


def torch_eager(crops: list[np.ndarray], onnx_logits: np.ndarray, folder: Path) -> dict[str, Any]:
    """PyTorch eager inference in .venv-model (never installed in .venv), on the same crops."""
    if not MODEL_VENV_PYTHON.is_file():
        return {"skipped": "no .venv-model (make model creates it)"}
    probe = subprocess.run([str(MODEL_VENV_PYTHON), "-c", "import torch"], capture_output=True, check=False)
    if probe.returncode != 0:
        return {"skipped": ".venv-model has no torch"}
    crops_path = folder / "crops.npy"
    out_path = folder / "torch.json"
    np.save(crops_path, np.stack(crops))
    run = subprocess.run(
        [str(MODEL_VENV_PYTHON), "bench/torch_eager.py", str(crops_path), str(out_path), str(MEASURED_VCPUS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        return {"skipped": f"torch run failed: {run.stderr.strip()[-300:]}"}
    result: dict[str, Any] = json.loads(out_path.read_text())
    torch_logits = np.load(out_path.with_suffix(".npy"))
    top1 = np.array(result.pop("top1"))
    result["top1_agreement_with_onnx"] = float((top1 == onnx_logits.argmax(axis=1)).mean())
    result["max_abs_logit_difference_vs_onnx"] = float(np.abs(torch_logits - onnx_logits).max())
    return result


def onnx_logits(classifier: Classifier, crops: list[np.ndarray]) -> np.ndarray:
    from refund_sorter.vision.images import to_model_input

    session = classifier.session
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: to_model_input(crops[i : i + INFERENCE_BATCH])})[0]
            for i in range(0, len(crops), INFERENCE_BATCH)
        ]
    )


def cost(wall_seconds_per_photo: float, cpu_seconds_per_photo: float, memory_mb: int) -> dict[str, Any]:
    """Lambda cost per 1,000 photos for the batch function, from the pipeline measured here.

    Lambda gives a function ``memory / 1769`` vCPUs' worth of CPU time per second. The batch pipeline is
    CPU-bound with more runnable threads than vCPUs (decode workers + onnxruntime), so on Lambda a photo takes
    its CPU seconds divided by that share. Two ways to get there, both reported:

    * by CPU time (the verdict): CPU seconds per photo measured here (every thread of the process) / Lambda's
      vCPUs. It does not depend on how much of the two vCPUs a noisy neighbour left us during the run.
    * by wall time (the plain scaling): wall seconds per photo here × (vCPUs here / vCPUs there). It assumes both
      vCPUs were ours for the whole run, so it overstates the cost when they were not.
    """
    lambda_vcpus = memory_mb / MB_PER_VCPU
    by_cpu = cpu_seconds_per_photo / lambda_vcpus
    by_wall = wall_seconds_per_photo * MEASURED_VCPUS / lambda_vcpus

    def usd(seconds: float) -> float:
        return seconds * memory_mb / 1024 * PRICE_PER_GB_SECOND * 1000 + PRICE_PER_REQUEST

    return {
        "memory_mb": memory_mb,
        "lambda_vcpus": round(lambda_vcpus, 3),
        "measured_vcpus": MEASURED_VCPUS,
        "scaling": f"CPU s per photo / ({memory_mb} / {MB_PER_VCPU}) vCPU",
        "lambda_seconds_per_photo": by_cpu,
        "usd_per_1000": usd(by_cpu),
        "by_wall_scaling": f"wall s per photo × {MEASURED_VCPUS} / ({memory_mb} / {MB_PER_VCPU})",
        "by_wall_lambda_seconds_per_photo": by_wall,
        "by_wall_usd_per_1000": usd(by_wall),
        "price_per_gb_second_usd": PRICE_PER_GB_SECOND,
        "price_per_request_usd": PRICE_PER_REQUEST,
        "requests_usd_per_1000_batch": PRICE_PER_REQUEST,  # one nightly invocation takes ~1,000 photos or more
        "requests_usd_per_1000_api": PRICE_PER_REQUEST * 1000,  # the API: one request per photo
        "note": "x86_64 list price (us-east-1); the nightly run is one invocation (so ~$0.0000002 of requests per "
        "1,000 photos); excludes S3 and DynamoDB request charges",
    }


def parallelism(seconds: float = 0.6) -> float:
    """How many CPUs this process actually gets right now: two threads of GIL-free hashing vs one."""
    import hashlib

    block = bytes(1 << 20)

    def spin(deadline: float) -> int:
        rounds = 0
        while time.perf_counter() < deadline:
            hashlib.sha256(block).digest()
            rounds += 1
        return rounds

    one = spin(time.perf_counter() + seconds / 2)
    with ThreadPoolExecutor(max_workers=MEASURED_VCPUS) as pool:
        deadline = time.perf_counter() + seconds / 2
        many = sum(pool.map(spin, [deadline] * MEASURED_VCPUS))
    return round(many / max(one, 1), 2)


# ------------------------------------------------------------------------------------------------------- report


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


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []

    def add(name: str, measured: float | None, target: str, *, better: str, unit: str, detail: str) -> None:
        goal = TARGETS[target]
        met = None if measured is None else measured >= goal if better == "higher" else measured <= goal
        row = {"metric": name, "measured": measured, "target": goal, "better": better, "unit": unit, "met": met}
        rows.append(row | {"detail": detail})

    s = results["summary"]
    add(
        "batch pipeline vs naive (images/s ratio)",
        s["batch_vs_naive"],
        "batch_vs_naive",
        better="higher",
        unit="×",
        detail=f"{s['batch_images_per_s']:.1f} vs {s['naive_images_per_s']:.2f} images/s",
    )
    add(
        "batch pipeline time per image vs floor",
        s["batch_vs_floor"],
        "batch_vs_floor",
        better="lower",
        unit="×",
        detail=f"{1000 / s['batch_images_per_s']:.1f} vs {s['floor_ms_per_image']:.1f} ms per image",
    )
    warm = results.get("predict_warm", {})
    if "memory_store" in warm:
        memory, moto = warm["memory_store"], warm["moto"]
        add(
            "warm predict p50, 12 MP JPEG (memory store)",
            round(memory["p50_ms"], 1),
            "predict_p50_ms",
            better="lower",
            unit="ms",
            detail=f"p95 {memory['p95_ms']:.1f} ms; on moto p50 {moto['p50_ms']:.1f}, p95 {moto['p95_ms']:.1f} ms; "
            f"the photo resized to 1600 px by the client: p50 {warm['downsized_memory_store']['p50_ms']:.1f} ms",
        )
    cold = results.get("cold_start", {})
    if "total_to_first_answer_ms" in cold:
        add(
            "cold start to first answer",
            cold["total_to_first_answer_ms"],
            "cold_start_ms",
            better="lower",
            unit="ms",
            detail=f"interpreter {cold['interpreter_start_ms']:.0f} + import {cold['import_handler_ms']:.0f} "
            f"+ first request {cold['first_request_ms']:.0f} ms",
        )
    layer = results.get("layer", {})
    add(
        "model layer unzipped",
        layer.get("mb"),
        "layer_mb",
        better="lower",
        unit="MB",
        detail=layer.get("source") or layer.get("reason", ""),
    )
    money = results["cost"]
    add(
        "cost per 1,000 photos (batch)",
        round(money["usd_per_1000"], 5),
        "usd_per_1000",
        better="lower",
        unit="$",
        detail=f"{money['memory_mb']} MB = {money['lambda_vcpus']} vCPU: "
        f"{money['lambda_seconds_per_photo'] * 1000:.1f} ms per photo there by CPU time; "
        f"by wall-time scaling ${money['by_wall_usd_per_1000']:.5f}",
    )
    return rows


def markdown(results: dict[str, Any]) -> str:
    s, corpus, cpu = results["summary"], results["corpus"], results["summary"]["cpu_ms_per_image"]
    lines = [
        "# refund-sorter benchmark",
        "",
        f"`{results['command']}` — {results['started']}, {results['machine']['cpus']} vCPU "
        f"{results['machine']['cpu']}. Corpus {corpus['key']}: {corpus['photos']} phone-like JPEGs "
        f"({', '.join(corpus['sizes'])}; {corpus['file_mb']['median']} MB median, {corpus['file_mb']['max']} MB max; "
        f"EXIF orientations 1/3/6/8; quality {corpus['quality_min_max'][0]}–{corpus['quality_min_max'][1]}). "
        f"Medians of {results['repeats']} interleaved rounds; whole run {results['seconds']:.0f} s. CPUs this process "
        f"actually got (2-thread hashing probe): {results['machine']['cpus_available_at_start']} at the start, "
        f"{results['machine']['cpus_available_at_end']} at the end; the batch pipeline used {s['pipeline_cpus_used']}.",
        "",
        "| measurement | images/s | ms per image | CPU ms per image |",
        "|---|---:|---:|---:|",
    ]
    w = s["workers"]
    rates = [
        (
            "naive: full decode + exif_transpose + resize + batch-1 ONNX",
            s["naive_images_per_s"],
            results["naive"]["cpu_ms_per_image"],
        ),
        ("floor: draft decode 1 thread + batch-16 ONNX", 1000 / s["floor_single_thread_ms_per_image"], None),
        (f"floor: draft decode {w} threads + batch-16 ONNX", 1000 / s["floor_ms_per_image"], None),
        ("  draft decode alone, 1 thread (`load_image`)", 1000 / s["decode_single_ms_per_image"], cpu.get("decode_1")),
        (f"  draft decode alone, {w} threads", 1000 / s["decode_pool_ms_per_image"], cpu.get("decode_pool")),
        ("  batch-16 inference alone, fp32", 1000 / s["infer_fp32_ms_per_image"], cpu.get("infer_fp32")),
        ("**batch pipeline** `Sorter.classify` → MemoryResultStore", s["batch_images_per_s"], cpu.get("pipeline")),
    ]
    if s.get("infer_int8_ms_per_image"):
        rates.append(("  batch-16 inference alone, int8", 1000 / s["infer_int8_ms_per_image"], cpu.get("infer_int8")))
        rates.append(
            ("batch pipeline, int8 model → MemoryResultStore", s["batch_int8_images_per_s"], cpu.get("pipeline_int8"))
        )
    moto = results.get("batch_moto", {})
    if moto.get("images_per_s"):
        rates.append(("nightly `run_nightly` on moto (S3, DynamoDB, archive, export)", moto["images_per_s"], None))
    torch = results.get("torch", {})
    if torch.get("images_per_s"):
        rates.append(("PyTorch eager batch-16 inference alone (.venv-model)", torch["images_per_s"], None))
        rates.append(
            ("PyTorch eager pipeline (draft decode in threads + torch)", s["torch_pipeline_images_per_s"], None)
        )
    for name, rate, cpu_ms in rates:
        lines.append(f"| {name} | {rate:.1f} | {1000 / rate:.1f} | {'' if cpu_ms is None else f'{cpu_ms:.1f}'} |")
    lines += ["", "| target | measured | goal | met | detail |", "|---|---:|---:|:-:|---|"]
    for row in results["targets"]:
        measured = "n/a" if row["measured"] is None else f"{row['measured']:g} {row['unit']}"
        op = "≥" if row["better"] == "higher" else "≤"
        met = {True: "yes", False: "**no**", None: "?"}[row["met"]]
        lines.append(
            f"| {row['metric']} | {measured} | {op} {row['target']:g} {row['unit']} | {met} | {row['detail']} |"
        )
    lines += ["", *notes(results)]
    return "\n".join(lines) + "\n"


def notes(results: dict[str, Any]) -> list[str]:
    out = []
    s_all = results["summary"]
    naive_run = results["naive"]
    out.append(
        "- Draft decoding vs full decoding (naive): top-1 label agreement "
        f"{naive_run['top1_agreement_with_product']:.1%}, "
        f"department agreement {naive_run['category_agreement_with_product']:.1%}."
    )
    int8 = results.get("int8", {})
    if "category_agreement" in int8:
        verdict = "offer it as a setting" if int8["offer_as_setting"] else "do not offer it"
        out.append(
            f"- int8 ({int8['model']}, {int8['file_mb']} MB): department agreement with fp32 "
            f"{int8['category_agreement']:.1%}, top-1 label agreement {int8['top1_label_agreement']:.1%} over "
            f"{int8['photos']} photos; inference {int8['speedup_inference']:.2f}× fp32, pipeline "
            f"{int8['speedup_pipeline']:.2f}× → {verdict} (rule: ≥ {INT8_MIN_CATEGORY_AGREEMENT:.0%})."
        )
    moto = results.get("batch_moto", {})
    if "calling_thread_storage_ms_per_photo" in moto:
        waits = ", ".join(f"{k} {v:.1f}" for k, v in moto["calling_thread_storage_ms_per_photo"].items())
        out.append(
            "- Nightly on moto: storage time per photo (ms; the get on the inference thread, add and archive on "
            f"the I/O pool): {waits} (moto's own CPU shares our 2 vCPUs)."
        )
    warm = results.get("predict_warm", {})
    if "parts_ms" in warm:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in warm["parts_ms"].items())
        out.append(
            f"- Warm predict photo: {warm['photo']}, {warm['photo_mb']} MB; parts (ms): {parts}. "
            f"The same photo resized by the client ({warm['downsized_photo']}): "
            f"p50 {warm['downsized_memory_store']['p50_ms']:.1f} ms."
        )
    cold = results.get("cold_start", {})
    if "first_request_parts_ms" in cold:
        parts = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in cold["first_request_parts_ms"].items())
        imports = cold["importtime_self_ms_by_package"].get("import", {})
        top = ", ".join(f"{k} {v:.0f}" for k, v in imports.items() if not k.startswith("_"))
        out.append(f"- Cold start, first request (ms): {parts}.")
        out.append(f"- Cold start, handler import by package (-X importtime self ms): {top}.")
    if "snapstart" in results:
        from bench import snapstart

        out.extend(snapstart.summary_lines(results["snapstart"]))
    money = results["cost"]
    out.append(
        f"- Cost: Lambda x86_64 ${money['price_per_gb_second_usd']}/GB-s + ${money['price_per_request_usd'] * 1e6:.2f} "
        f"per 1M requests. Time on Lambda = {money['scaling']} = {money['lambda_seconds_per_photo'] * 1000:.1f} ms "
        f"(${money['usd_per_1000']:.5f} per 1,000); the plain {money['by_wall_scaling']} gives "
        f"{money['by_wall_lambda_seconds_per_photo'] * 1000:.1f} ms (${money['by_wall_usd_per_1000']:.5f}), "
        "which assumes both vCPUs were ours all run. The API pays one request per photo: +$0.0002 per 1,000."
    )
    out.append(
        f"- Batch vs naive by CPU time per image (independent of free vCPUs): {s_all['batch_vs_naive_by_cpu_time']}×. "
        "Batch rows store each Result in MemoryResultStore (in memory); the nightly row runs against moto."
    )
    return out


# --------------------------------------------------------------------------------------------------------- main


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
    int8_path = ROOT / "out" / "model" / "efficientnet_lite0.int8.onnx"  # tools/model/quantize_int8.py
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
    from refund_sorter_cli.local_stack import create_resources, function_environment
    from refund_sorter_cli.template import Template

    twelve_mp = [i for i, s in enumerate(corpus.specs) if s.width * s.height >= 12_000_000]
    pick = sorted(twelve_mp, key=lambda i: len(datas[i]))[len(twelve_mp) // 2]  # the median-sized 12 MP photo
    photo = datas[pick]
    spec = corpus.specs[pick]
    with moto_server() as endpoint:
        log(f"moto server at {endpoint}")
        variables = use_endpoint(endpoint)
        template = Template()
        create_resources(template)
        log("nightly batch on moto")
        results["batch_moto"] = batch_on_moto(sorter, datas, [s.name for s in corpus.specs])
        log(f"warm predict: {args.predict_requests} requests")
        results["predict_warm"] = predict_warm(photo, args.predict_requests, warmup=5)
        results["predict_warm"]["photo"] = f"{spec.name} ({spec.width}×{spec.height}, q{spec.quality})"
        log(f"cold start: {args.cold_runs} fresh processes")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUND_SORTER_", "POWERTOOLS_"))}
        env |= variables | function_environment(template, "PredictFunction")
        results["cold_start"] = cold_start(env, photo, args.cold_runs)
        results["cold_start"]["photo"] = results["predict_warm"]["photo"]
        from bench import snapstart

        log(f"SnapStart, emulated: {args.cold_runs} fresh processes per mode")
        results["snapstart"] = snapstart.measure(env, photo, args.cold_runs)


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


def decode_stats(decode_ms: list[float], datas: list[bytes]) -> dict[str, float]:
    mb = np.array([len(d) / 1e6 for d in datas])
    ms = np.array(decode_ms)
    slope, intercept = np.polyfit(mb, ms, 1)
    return {
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "ms_per_mb_slope": float(slope),
        "ms_intercept": float(intercept),
    }


def summarise(results: dict[str, Any], runs: dict[str, list[float]], count: int, workers: int) -> dict[str, Any]:
    def ms(key: str) -> float | None:
        return 1000 * median(runs[key]) / count if runs[key] else None

    decode_single, decode_pool, infer = ms("decode_1"), ms("decode_pool"), ms("infer_fp32")
    assert decode_single is not None and decode_pool is not None and infer is not None
    batch_rate = count / median(runs["pipeline"])
    floor = decode_pool + infer
    naive_rate = results["naive"]["images_per_s"]
    return {
        "workers": workers,
        "naive_images_per_s": naive_rate,
        "decode_single_ms_per_image": decode_single,
        "decode_pool_ms_per_image": decode_pool,
        "infer_fp32_ms_per_image": infer,
        "infer_int8_ms_per_image": ms("infer_int8"),
        "floor_ms_per_image": floor,
        "floor_single_thread_ms_per_image": decode_single + infer,
        "floor_images_per_s": 1000 / floor,
        "batch_images_per_s": batch_rate,
        "batch_images_per_s_all_rounds": [count / s for s in runs["pipeline"]],
        "batch_int8_images_per_s": count / median(runs["pipeline_int8"]) if runs["pipeline_int8"] else None,
        "cpu_ms_per_image": {
            k.removeprefix("cpu_"): 1000 * median(v) / count for k, v in runs.items() if k.startswith("cpu_")
        },
        "pipeline_cpus_used": round(median(runs["cpu_pipeline"]) / median(runs["pipeline"]), 2),
        "batch_vs_naive_by_cpu_time": round(
            results["naive"]["cpu_ms_per_image"] / (1000 * median(runs["cpu_pipeline"]) / count), 2
        ),
        "batch_vs_naive": round(batch_rate / naive_rate, 2),
        "batch_vs_floor": round((1000 / batch_rate) / floor, 3),
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
