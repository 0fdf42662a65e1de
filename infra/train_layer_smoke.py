"""Smoke-test a built training layer the way Lambda will load it (TrainFunction's only layer).

Run with the runtime's Python in isolated mode, like infra/layer_smoke.py::

    python3.12 -I -S infra/train_layer_smoke.py .aws-sam/build/TrainLayer/python [--runtime DIR]
        [--handler .aws-sam/build/TrainFunction:train_handler.lambda_handler]

Checks: no onnxruntime, Pillow or client code in it (training decodes no photo); every shared library loads;
the handler imports; and a head is fitted, measured and reported (SVG) on random features, so scikit-learn,
scipy and numpy work together on the Lambda platform's wheels.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

NOT_IN_THIS_LAYER = ("onnxruntime", "PIL", "pi_heif", "matplotlib", "refund_sorter_cli", "moto", "boto3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", type=Path, help="the layer's python/ directory")
    parser.add_argument("--runtime", type=Path, help="a directory with what the Lambda runtime provides (boto3)")
    parser.add_argument("--handler", action="append", default=[], metavar="CODE_DIR:MODULE.FUNCTION")
    args = parser.parse_args()
    layer = args.layer.resolve()
    sys.path.insert(0, str(layer))
    shipped = [name for name in NOT_IN_THIS_LAYER if importlib.util.find_spec(name) is not None]
    assert not shipped, f"the training layer ships what it must not: {shipped}"
    if args.runtime:
        sys.path.append(str(args.runtime.resolve()))
    libraries = sorted(layer.rglob("*.so*"))
    for library in libraries:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    print(f"train-layer-smoke: {len(libraries)} shared libraries load; no {', '.join(NOT_IN_THIS_LAYER)}")
    for spec in args.handler:
        code_dir, _, target = spec.partition(":")
        module_name, _, attribute = target.rpartition(".")
        sys.path.insert(0, str(Path(code_dir).resolve()))
        assert callable(getattr(importlib.import_module(module_name), attribute)), spec
        print(f"train-layer-smoke: handler {target} imports")
    fit_a_head()
    return 0


def fit_a_head() -> None:
    import numpy as np

    from refund_sorter.config import Settings
    from refund_sorter_training.fit import Labelled
    from refund_sorter_training.job import backbone_version, fit_and_write

    rng = np.random.default_rng(0)
    departments = [d for d in ("hat", "shoes", "pants") for _ in range(12)]
    centres = {d: rng.normal(size=1280) for d in set(departments)}
    features = np.stack([centres[d] + rng.normal(scale=2.0, size=1280) for d in departments]).astype(np.float16)
    settings = Settings()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        head = fit_and_write(Labelled(features, departments), settings, Path(out), sources={"smoke": True}, seed=0)
        files = sorted(p.name for p in Path(out).iterdir())
    assert files == ["confusion.svg", "coverage.svg", "head.npz", "report.md", "version.json"], files
    assert head.backbone == backbone_version(settings)
    print(
        f"train-layer-smoke: fitted {head.version} ({len(head.departments)} departments, accuracy "
        f"{head.card['metrics']['accuracy']:.0%}) in {time.perf_counter() - started:.2f} s; backbone {head.backbone}"
    )


if __name__ == "__main__":
    sys.exit(main())
