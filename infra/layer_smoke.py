"""Smoke-test a built model layer the way Lambda will load it.

Run with the runtime's Python in isolated mode, so nothing from the host's environment leaks in::

    python3.12 -I -S infra/layer_smoke.py .aws-sam/build/ModelLayer/python [--runtime DIR]
        [--handler .aws-sam/build/PredictFunction:predict_handler.lambda_handler ...]

``-I -S`` drops PYTHONPATH, the user site and site-packages; this script then puts the layer directory on
``sys.path`` directly, as the Lambda runtime does for ``/opt/python`` (no ``.pth`` processing either).
``--runtime DIR`` appends a directory holding what the Lambda runtime itself provides (boto3), after the
layer, in the runtime's order. Each ``--handler CODE_DIR:module.function`` is imported from its built code
folder as Lambda imports it from ``/var/task``.

Checks: the layer does not ship boto3/botocore nor any client-side code (CLI, local stack: it must import
without moto, werkzeug, yaml or rich), every shared library in it loads (so slimming removed no
library something still needs), the modules the functions use import from the layer, the handlers import,
and a photo in each accepted format goes through the whole pipeline to a Result: generated where Pillow can
write the format, a committed fixture for HEIC (tests/fixtures/formats/) and AVIF as phones write them.
The GPL build of the HEIC reader (pillow-heif) must not ship; the LGPL one (pi-heif) ships with its licences.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.metadata
import importlib.util
import io
import random
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULES = (
    "numpy",
    "PIL.Image",
    "onnxruntime",
    "pydantic",
    "pydantic_settings",
    "aws_lambda_powertools",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.typing",
    "refund_sorter.vision.sorter",
    "refund_sorter.results",
)
PROVIDED_BY_LAMBDA = ("boto3", "botocore", "s3transfer")
# The client side (command line, local stack, template reader) and what only it needs: never in Lambda.
CLIENT_ONLY = ("refund_sorter_cli", "moto", "werkzeug", "yaml", "rich")
# pillow-heif's wheels bundle x265 (GPLv2): the layer reads HEIC with pi-heif (LGPL libheif + libde265) instead.
GPL_ONLY = ("pillow_heif",)
# Photos as phones write them (pixels stored sideways, turned by the container's irot): nothing in the layer
# can write HEIC, so these are committed files (tests/fixtures/formats/make_fixtures.py says how they were made).
PHONE_PHOTOS = {
    "HEIF": REPO / "tests/fixtures/formats/coffee-irot.heic",
    "AVIF": REPO / "tests/fixtures/formats/coffee-irot.avif",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", type=Path, help="the layer's python/ directory")
    parser.add_argument("--runtime", type=Path, help="a directory with what the Lambda runtime provides (boto3)")
    parser.add_argument(
        "--handler", action="append", default=[], metavar="CODE_DIR:MODULE.FUNCTION", help="a built function to import"
    )
    args = parser.parse_args()
    layer = args.layer.resolve()
    sys.path.insert(0, str(layer))
    if args.runtime:
        sys.path.append(str(args.runtime.resolve()))

    check_libraries(layer)
    check_runtime_only(layer)
    check_modules(layer)
    check_handlers(args.handler)
    check_snapstart_hooks()
    classify_every_format()
    return 0


def check_libraries(layer: Path) -> None:
    shipped = [name for name in PROVIDED_BY_LAMBDA if (layer / name).exists()]
    assert not shipped, f"the layer ships what Lambda provides: {shipped}"
    libraries = sorted(layer.rglob("*.so*"))
    for library in libraries:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)  # raises OSError naming any missing dependency
    print(f"layer-smoke: {len(libraries)} shared libraries load")


def check_runtime_only(layer: Path) -> None:
    """Only the runtime ships: no client code, and no module of ours that imports a client-only package."""
    shipped = [name for name in CLIENT_ONLY if importlib.util.find_spec(name) is not None]
    assert not shipped, f"the layer ships client-side code: {shipped}"
    gpl = [name for name in GPL_ONLY if importlib.util.find_spec(name) is not None]
    assert not gpl, f"the layer ships GPL code: {gpl}"
    licences = {p.name for p in layer.glob("pi_heif-*.dist-info/licenses/*")}
    assert "LICENSES_bundled.txt" in licences, f"pi-heif's licences of libheif/libde265 must ship with it: {licences}"
    package = layer / "refund_sorter"
    modules = sorted(p for p in package.rglob("*.py"))
    for path in modules:
        name = ".".join(path.relative_to(layer).with_suffix("").parts).removesuffix(".__init__")
        importlib.import_module(name)  # every runtime module imports with the layer alone
    print(f"layer-smoke: runtime only: {len(modules)} modules of refund_sorter import; no {', '.join(CLIENT_ONLY)}")


def check_modules(layer: Path) -> None:
    started = time.perf_counter()
    for name in MODULES:
        module = importlib.import_module(name)
        origin = Path(module.__file__ or "").resolve()
        assert origin.is_relative_to(layer), f"{name} imported from {origin}, not from the layer"
    print(f"layer-smoke: {len(MODULES)} modules import from the layer in {time.perf_counter() - started:.2f} s")
    print("layer-smoke: powertools", importlib.metadata.version("aws-lambda-powertools"))


def check_handlers(specs: list[str]) -> None:
    for spec in specs:
        code_dir, _, handler = spec.rpartition(":")
        module_name, _, function_name = handler.rpartition(".")
        task = Path(code_dir).resolve()
        sys.path.insert(0, str(task))  # Lambda's /var/task comes before the layers
        sys.modules.pop(module_name, None)  # two functions may share a handler module (separate processes in Lambda)
        module = importlib.import_module(module_name)
        assert Path(module.__file__ or "").resolve().parent == task, f"{module_name} not imported from {task}"
        assert callable(getattr(module, function_name, None)), f"{spec}: no function {function_name}"
        sys.path.remove(str(task))
    if specs:
        print(f"layer-smoke: handlers import: {', '.join(spec.rpartition(':')[2] for spec in specs)}")


def check_snapstart_hooks() -> None:
    """Run the SnapStart hooks the handlers registered, as Lambda does around a snapshot (before, then after)."""
    try:
        import snapshot_restore_py  # the runtime provides it (here: --runtime)
    except ImportError:
        print("layer-smoke: SnapStart hooks not checked: no snapshot_restore_py (pass --runtime)")
        return
    timings = []
    for registry in (snapshot_restore_py.get_before_snapshot(), snapshot_restore_py.get_after_restore()):
        assert registry, "no SnapStart hook registered (the predict handler registers two)"
        started = time.perf_counter()
        for function, hook_args, hook_kwargs in registry:
            function(*hook_args, **hook_kwargs)
        timings.append(time.perf_counter() - started)
    before_s, after_ms = timings[0], timings[1] * 1000
    print(f"layer-smoke: SnapStart hooks run: before snapshot {before_s:.2f} s, after restore {after_ms:.1f} ms")


def classify_every_format() -> None:
    import numpy as np
    from PIL import Image

    from refund_sorter.photos import Photo
    from refund_sorter.vision import images
    from refund_sorter.vision.sorter import get_sorter

    # A synthetic photo (a gradient with noise), saved in every format the package accepts that Pillow writes,
    # plus the phone fixtures: each decoder is a native library that slimming could have removed.
    y, x = np.mgrid[0:480, 0:640]
    pixels = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.float32)
    # noise from the standard library: the layer ships without numpy.random (slimmed: nothing else uses it)
    noise = np.frombuffer(random.Random(7).randbytes(pixels.size), np.uint8).reshape(pixels.shape)
    pixels += (noise.astype(np.float32) - 127.5) * 0.2
    picture = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    photos = []
    for image_format in images.ACCEPTED_FORMATS:
        if image_format in PHONE_PHOTOS:
            data = PHONE_PHOTOS[image_format].read_bytes()
        else:
            buffer = io.BytesIO()
            picture.save(buffer, format=image_format)
            data = buffer.getvalue()
        assert images.sniff_format(data[:64]) == image_format, image_format
        photos.append(Photo(id=image_format, source=f"layer-smoke.{image_format.lower()}", read=partial(bytes, data)))

    started = time.perf_counter()
    results = [outcome.result for outcome in get_sorter().classify(photos)]
    elapsed = time.perf_counter() - started
    for photo, result in zip(photos, results, strict=True):
        assert result is not None and result.status in {"classified", "needs_review"}, (photo.id, result)
        assert result.confidence is not None and 0.0 <= result.confidence <= 1.0, (photo.id, result)
    phone = {r.id: r for r in results if r is not None and r.id in PHONE_PHOTOS}
    # the two fixtures hold the same picture through two decoders: the same answer from both
    assert len({r.label for r in phone.values()}) == 1, {k: r.label for k, r in phone.items()}
    print(f"layer-smoke: phone photos: {', '.join(f'{k} {r.label} {r.confidence}' for k, r in phone.items())}")
    last = results[-1]
    assert last is not None
    print(
        f"layer-smoke: classified {len(results)} photos ({', '.join(p.id for p in photos)}) in "
        f"{elapsed:.2f} s: {last.prediction} {last.confidence} ({last.label}), "
        f"{last.model_version}"
    )


if __name__ == "__main__":
    sys.exit(main())
