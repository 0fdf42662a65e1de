"""The predict handler warm, in this process: p50/p95 of ``POST /predictions`` with a 12 MP photo inline, against
moto and with the store in memory (the model's own latency), the same photo resized by a client, and where a
request's time goes. :func:`post_event` is the API Gateway event every predict benchmark sends."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np

from bench.common import median, percentile

if TYPE_CHECKING:
    from collections.abc import Callable


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
    from refund_sorter.api.service import get_service
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
            service = get_service()  # the one the handler's routes use, after the requests above
            # The same service with its Results kept in memory: the handler's latency without DynamoDB's.
            with mock.patch.object(type(service), "store", new_callable=mock.PropertyMock) as store:
                store.return_value = MemoryResultStore()
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
