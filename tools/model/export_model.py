"""Export EfficientNet-Lite0 to the ONNX file the runtime ships, with its label list and ``model.json``.

Run from the repository root with the model venv (see ``requirements.txt``)::

    .venv-model/bin/python tools/model/export_model.py

Writes into ``layers/model/refund_sorter/data/``:

* ``efficientnet_lite0.onnx``: fp32, opset 18, one self-contained file; input ``images`` ``float32[batch,3,224,224]``
  (already normalised, ``(x - 127) / 128``), outputs ``logits`` ``float32[batch,1000]`` (no softmax) and
  ``embeddings`` ``float32[batch,1280]``, the pooled features the last layer reads (``expose_embeddings.py``).
* ``model.json``: name, version (sha256 prefix of the ONNX file), source, licence, input recipe, opset.

The file is byte-for-byte reproducible with the pinned packages: the exporter's per-node debug metadata (which
embeds absolute source paths of this machine's venv) is stripped before saving, so the bytes, and so the
version in ``model.json``, depend only on the weights and the pinned exporter.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

try:  # run as a module from the repository root: python -m tools.model.export_model
    from tools.model import reference as ref
    from tools.model.expose_embeddings import EMBEDDINGS, expose_embeddings, update_model_card
except ModuleNotFoundError:  # run as a file: python tools/model/export_model.py (its folder is on sys.path)
    import reference as ref  # type: ignore[import-not-found, no-redef]
    from expose_embeddings import (  # type: ignore[import-not-found, no-redef]
        EMBEDDINGS,
        expose_embeddings,
        update_model_card,
    )

OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
# ONNX Runtime fuses and reorders float ops differently from PyTorch; 1e-4 is ~100x the usual difference.
PARITY_TOLERANCE = 1e-4


def export_dynamo(model: torch.nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """Export with the torch.export-based exporter and onnxscript's optimiser (folds BatchNorm into Conv)."""
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"inputs": {0: torch.export.Dim(BATCH_DIM)}},
        external_data=False,
        optimize=True,
        verify=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def export_legacy(model: torch.nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """Export with the TorchScript-based exporter: only a fallback, for when the dynamo exporter breaks."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True,
        )
        return onnx.load(str(path))


def strip_debug_info(proto: onnx.ModelProto) -> None:
    """Drop per-node stack traces, FX names and doc strings: they hold absolute paths and change nothing."""
    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            raise RuntimeError(f"node {node.name} has a subgraph; strip_debug_info does not handle those")
    for values in (graph.input, graph.output, graph.value_info):
        for value in values:
            del value.metadata_props[:]
            value.doc_string = ""
    for tensor in graph.initializer:
        del tensor.metadata_props[:]
        tensor.doc_string = ""
    del graph.metadata_props[:]
    graph.doc_string = ""
    proto.doc_string = ""


def check_interface(proto: onnx.ModelProto) -> None:
    """Fail unless the graph has exactly the interface the runtime relies on."""
    onnx.checker.check_model(proto, full_check=True)
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise RuntimeError(f"expected opset {OPSET}, got {opsets}")

    def shape(value: onnx.ValueInfoProto) -> list[int | str]:
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    inputs = [(value.name, shape(value)) for value in proto.graph.input]
    outputs = [(value.name, shape(value)) for value in proto.graph.output]
    size = ref.INPUT_SIZE
    expected = [(OUTPUT_NAME, [BATCH_DIM, ref.NUM_CLASSES]), (EMBEDDINGS, [BATCH_DIM, ref.NUM_FEATURES])]
    if inputs != [(INPUT_NAME, [BATCH_DIM, 3, size, size])] or outputs != expected:
        raise RuntimeError(f"unexpected interface: inputs {inputs}, outputs {outputs}")


def check_parity(model: torch.nn.Module, onnx_path: Path) -> float:
    """Max |logit difference| between PyTorch and ONNX Runtime on a seeded random batch of real-range pixels."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, ref.INPUT_SIZE, ref.INPUT_SIZE, 3), dtype=np.uint8)
    batch = ref.normalise(pixels)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    diff = float(np.max(np.abs(actual - expected)))
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE})")
    return diff


def write_json(path: Path, data: object) -> None:
    """Pretty, UTF-8, newline-terminated JSON: stable bytes, readable diffs."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(onnx_path: Path, opset: int) -> dict[str, Any]:
    """Build the contents of ``model.json``."""
    digest = ref.sha256_file(onnx_path)
    return {
        "name": ref.MODEL_NAME,
        "version": digest[:12],
        "sha256": digest,
        "source": ref.SOURCE,
        "licence": ref.LICENCE,
        "input": {
            "size": ref.INPUT_SIZE,
            "crop_fraction": ref.CROP_FRACTION,
            "mean": int(ref.PIXEL_MEAN),
            "scale": int(ref.PIXEL_SCALE),
            "layout": "NCHW",
        },
        "opset": opset,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults write into the repository."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=ref.DATA_DIR, help="where to write (default: %(default)s)")
    parser.add_argument("--legacy", action="store_true", help="use the TorchScript exporter instead of dynamo")
    parser.add_argument("--no-fallback", action="store_true", help="fail if the dynamo exporter fails")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export, check and describe the model; returns the exit status."""
    args = parse_args(argv)
    output_dir: Path = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = output_dir / ref.ONNX_PATH.name

    model = ref.build_model()
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch axis.
    example = torch.zeros(2, 3, ref.INPUT_SIZE, ref.INPUT_SIZE)

    started = time.perf_counter()
    exporter = "legacy" if args.legacy else "dynamo"
    if args.legacy:
        proto = export_legacy(model, example)
    else:
        try:
            proto = export_dynamo(model, example)
        except Exception as exc:
            if args.no_fallback:
                raise
            print(f"WARNING: dynamo export failed ({exc!r}); falling back to the legacy exporter", file=sys.stderr)
            exporter = "legacy"
            proto = export_legacy(model, example)
    export_seconds = time.perf_counter() - started

    strip_debug_info(proto)
    expose_embeddings(proto)
    check_interface(proto)
    # Write beside the target, then rename: a crash never leaves a half-written model for the runtime to load.
    partial = onnx_path.with_suffix(".onnx.partial")
    onnx.save_model(proto, str(partial), save_as_external_data=False)
    partial.replace(onnx_path)

    diff = check_parity(model, onnx_path)

    card = model_card(onnx_path, OPSET)
    write_json(output_dir / ref.MODEL_JSON_PATH.name, card)
    card = update_model_card(onnx_path)  # the outputs, as expose_embeddings.py alone would write them

    print(f"exporter:      {exporter} (torch {torch.__version__}, onnx {onnx.__version__}, opset {OPSET})")
    print(f"export time:   {export_seconds:.1f} s")
    print(f"onnx:          {onnx_path} ({onnx_path.stat().st_size:,} bytes)")
    print(f"sha256:        {card['sha256']}")
    print(f"parity:        max |onnxruntime - torch| = {diff:.3g} on 3 random images")
    print(f"model card:    {output_dir / ref.MODEL_JSON_PATH.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
