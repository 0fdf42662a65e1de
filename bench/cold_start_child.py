"""Cold start driver: a fresh process imports the predict handler and serves its first POST /predictions.

Run by ``bench/run.py`` as ``python bench/cold_start.py EVENT.json OUT.json [HANDLER_DIR]`` from the repo root, with the
predict function's environment (as the template gives it) pointing at the benchmark's moto server. Only the
standard library is imported before the handler, so the import stamp is the handler's own cost. Each phase
writes a marker line to stderr so a ``-X importtime`` run can attribute every import to its phase.

Phases (``time.perf_counter`` stamps, milliseconds):
  import         ``import predict_handler`` (what Lambda's init phase runs)
  first_request  ``lambda_handler(event)`` for the first POST, split by wrappers into
                 decode (``decode_photo``), onnxruntime import, session creation, first inference, and the rest
                 (service construction: settings, taxonomy, boto3 clients; request parsing; DynamoDB put; logging)
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
STARTED_WALL = time.time()

import contextlib  # noqa: E402 - stdlib only, after the first stamp
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HEAVY = (
    "numpy",
    "PIL",
    "onnxruntime",
    "pydantic",
    "pydantic_settings",
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "boto3",
    "botocore",
    "urllib3",
    "yaml",
)


class Context:
    """The parts of Lambda's context object Powertools reads (refund_sorter_cli.local_stack has one, but importing it
    would load PyYAML, which the deployed handler never does)."""

    function_name = "cold-start-bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cold-start-bench"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    function_version = "$LATEST"
    log_group_name = "/aws/lambda/local"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def marker(phase: str) -> None:
    print(f"## phase {phase}", file=sys.stderr, flush=True)


def timed(owner: Any, name: str, key: str, parts: dict[str, float]) -> None:
    """Replace ``owner.name`` with a wrapper that records its first call's duration as ``parts[key]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            parts.setdefault(key, (time.perf_counter() - start) * 1000)

    setattr(owner, name, wrapper)


def install_timers(parts: dict[str, float]) -> float:
    """Wrap the first request's parts; returns the ms spent importing the modules the wrappers need (which the
    first request would import anyway, so they are added back to it)."""
    started = time.perf_counter()
    import refund_sorter.storage.dynamodb as store_module
    import refund_sorter.vision.classifier as classifier_module
    import refund_sorter.vision.images as images_module
    import refund_sorter.vision.sorter as sorter_module  # what get_service imports, timed here with the rest

    import_ms = (time.perf_counter() - started) * 1000
    timed(images_module, "decode_photo", "decode_ms", parts)
    # The API's get_service builds the process's Sorter (settings, taxonomy, the head source; the model session
    # comes later): the routes hold get_service itself, but it looks get_sorter up on each first call.
    timed(sorter_module, "get_sorter", "get_service_ms", parts)
    timed(store_module.DynamoResultStore, "__init__", "store_client_ms", parts)  # boto3 import + DynamoDB client
    timed(store_module.DynamoResultStore, "add", "store_add_ms", parts)  # the DynamoDB put
    timed(classifier_module.Classifier, "run", "probabilities_ms", parts)  # the model call, both outputs
    session_property = classifier_module.Classifier.__dict__["session"]

    def timed_session(self: Any) -> Any:
        start = time.perf_counter()
        import onnxruntime  # noqa: F401 - timed on its own

        parts["import_onnxruntime_ms"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        session = session_property.func(self)
        parts["session_create_ms"] = (time.perf_counter() - start) * 1000
        return session

    replacement = functools.cached_property(timed_session)
    replacement.__set_name__(classifier_module.Classifier, "session")
    classifier_module.Classifier.session = replacement  # type: ignore[method-assign,assignment]
    return import_ms


def main() -> None:
    event_path, out_path = sys.argv[1], sys.argv[2]
    event = json.loads(Path(event_path).read_text())
    handler_dir = sys.argv[3] if len(sys.argv) > 3 else "functions/predict"  # a variant, to try a change
    sys.path.insert(0, str(Path(handler_dir).resolve()))  # Lambda's task root is on sys.path

    marker("import")
    t0 = time.perf_counter()
    import predict_handler  # type: ignore[import-not-found]

    import_ms = (time.perf_counter() - t0) * 1000
    loaded_by_import = [m for m in HEAVY if m in sys.modules]

    marker("first_request")
    parts: dict[str, float] = {}
    import_pipeline_ms = install_timers(parts)
    with contextlib.redirect_stdout(sys.stderr):  # Powertools' metrics go to stdout
        t1 = time.perf_counter()
        reply = predict_handler.lambda_handler(event, Context())
        first_ms = (time.perf_counter() - t1) * 1000 + import_pipeline_ms
        marker("second_request")
        t2 = time.perf_counter()
        second = predict_handler.lambda_handler(event, Context())
        second_ms = (time.perf_counter() - t2) * 1000
    marker("done")
    model_setup = parts.get("session_create_ms", 0.0) + parts.get("import_onnxruntime_ms", 0.0)
    stamps = {
        "import_ms": import_ms,
        "loaded_by_import": loaded_by_import,
        "import_pipeline_ms": import_pipeline_ms,
        "status": reply["statusCode"],
        "second_status": second["statusCode"],
        "first_request_ms": first_ms,
        "second_request_ms": second_ms,
        "parts": parts,
        "first_inference_ms": parts.get("probabilities_ms", 0.0) - model_setup,
        "process_started_wall": STARTED_WALL,
        "driver_total_ms": (time.perf_counter() - STARTED) * 1000,
        "loaded_after_request": [m for m in HEAVY if m in sys.modules],
        "body": json.loads(reply["body"]) if reply.get("body") else None,
    }
    Path(out_path).write_text(json.dumps(stamps))
    os._exit(0)  # no atexit work (Powertools flushes, thread pools) in the measured process's tail


if __name__ == "__main__":
    main()
