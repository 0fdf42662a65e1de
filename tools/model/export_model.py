"""Export an EfficientNet-Lite backbone to the ONNX file the runtime reads, with its ``model.json``.

Run from the repository root with the model venv (see ``requirements.txt``)::

    .venv-model/bin/python tools/model/export_model.py [--backbone efficientnet-lite2]

Writes the shipped backbone (``reference.SHIPPED``) into ``layers/model/refund_sorter/data/``, any other
candidate into ``out/backbones/<name>/`` (for ``bench/backbones.py``; not committed):

* ``efficientnet_liteN.onnx``: fp32, opset 18, one self-contained file; input ``images``
  ``float32[batch,3,S,S]`` (S the backbone's size; already normalised, ``(x - 127) / 128``), outputs ``logits``
  ``float32[batch,1000]`` (no softmax) and ``embeddings`` ``float32[batch,1280]``, the pooled features the last
  layer reads (``expose_embeddings.py``).
* ``model.json``: name, file, version (sha256 prefix of the ONNX file), source, licence, input recipe, opset.

Every export is checked the same way: the graph's interface, parity with PyTorch on random pixels, and an
ImageNet sanity check (the top-1 class of a few well-known photos, e.g. skimage's coffee cup and cat), since the
Lite1/Lite2 conversions are little tested elsewhere.

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
from typing import Any, Final

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


def check_interface(proto: onnx.ModelProto, backbone: ref.Backbone) -> None:
    """Fail unless the graph has exactly the interface the runtime relies on."""
    onnx.checker.check_model(proto, full_check=True)
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise RuntimeError(f"expected opset {OPSET}, got {opsets}")

    def shape(value: onnx.ValueInfoProto) -> list[int | str]:
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    inputs = [(value.name, shape(value)) for value in proto.graph.input]
    outputs = [(value.name, shape(value)) for value in proto.graph.output]
    size = backbone.input_size
    expected = [(OUTPUT_NAME, [BATCH_DIM, ref.NUM_CLASSES]), (EMBEDDINGS, [BATCH_DIM, ref.NUM_FEATURES])]
    if inputs != [(INPUT_NAME, [BATCH_DIM, 3, size, size])] or outputs != expected:
        raise RuntimeError(f"unexpected interface: inputs {inputs}, outputs {outputs}")


def check_parity(model: torch.nn.Module, onnx_path: Path, size: int) -> float:
    """Max |logit difference| between PyTorch and ONNX Runtime on a seeded random batch of real-range pixels."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    batch = ref.normalise(pixels)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    diff = float(np.max(np.abs(actual - expected)))
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE})")
    return diff


# Well-known photos and the ImageNet classes any of these backbones must name first for them (Lite0's top-1s:
# espresso 0.95, tiger cat 0.38, tripod 0.94, moped 0.45): a conversion that scrambled channels, size or
# normalisation fails here even when ONNX and PyTorch agree with each other.
SANITY: Final = {
    "skimage/coffee": {"espresso", "cup", "coffee mug"},
    "skimage/chelsea": {"tiger cat", "Egyptian Mau", "tabby cat"},
    "skimage/camera": {"tripod", "reflex camera", "Polaroid camera"},
    "skimage/motorcycle_left": {"moped", "motor scooter", "disc brake"},
}


def check_imagenet(onnx_path: Path, size: int) -> dict[str, str]:
    """The ONNX file's top-1 label for each :data:`SANITY` photo; raises if one is not among the expected."""
    labels = ref.load_labels()
    photos = [photo for photo in ref.PHOTOS if photo.name in SANITY]
    pixels = np.stack([ref.load_photo(photo, size)[0] for photo in photos])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: ref.normalise(pixels)})
    found = {photo.name: labels[ref.top_k(row, 1)[0]] for photo, row in zip(photos, logits, strict=True)}
    wrong = {name: label for name, label in found.items() if label not in SANITY[name]}
    if wrong:
        raise RuntimeError(f"ImageNet sanity check failed (photo: top-1 label): {wrong}")
    return found


# Smaller float tensors (shapes, scalars) stay float32: a Cast for each would cost more than it saves.
FP16_MIN_ELEMENTS: Final = 64


def store_weights_as_float16(proto: onnx.ModelProto) -> int:
    """Store every float32 weight as float16 and cast it back to float32 at the graph's start, in place.

    Only for weights that float16 holds exactly (``reference.half_weights`` rounded them before the export), so
    the graph computes bit for bit what it computed before; ONNX Runtime folds the casts into constants when the
    session is created, so inference runs in float32 at float32's speed. Returns the bytes saved.
    """
    from onnx import numpy_helper

    graph = proto.graph
    casts = []
    saved = 0
    for index, tensor in enumerate(list(graph.initializer)):
        if tensor.data_type != onnx.TensorProto.FLOAT or int(np.prod(tensor.dims)) < FP16_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            raise RuntimeError(f"weight {tensor.name} is not float16-exact: build the model with fp16_weights")
        name = tensor.name  # read before CopyFrom: ``tensor`` is the graph's own message, overwritten in place
        stored = numpy_helper.from_array(half, f"{name}__fp16")
        graph.initializer[index].CopyFrom(stored)
        casts.append(onnx.helper.make_node("Cast", [stored.name], [name], to=onnx.TensorProto.FLOAT))
        saved += values.nbytes - half.nbytes
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto, full_check=True)
    return saved


def write_json(path: Path, data: object) -> None:
    """Pretty, UTF-8, newline-terminated JSON: stable bytes, readable diffs."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(onnx_path: Path, opset: int, backbone: ref.Backbone, fp16_weights: bool) -> dict[str, Any]:
    """Build the contents of ``model.json``."""
    digest = ref.sha256_file(onnx_path)
    return {
        "name": backbone.name,
        "file": onnx_path.name,
        "version": digest[:12],
        "sha256": digest,
        "source": backbone.source,
        "licence": ref.LICENCE,
        "imagenet_top1": backbone.imagenet_top1,
        "weights_stored_as": "float16" if fp16_weights else "float32",
        "input": {
            "size": backbone.input_size,
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
    parser.add_argument("--backbone", choices=sorted(ref.BACKBONES), default=ref.SHIPPED.name, help="%(default)s")
    parser.add_argument(
        "--output-dir",
        type=Path,
        help=f"where to write (default: {ref.DATA_DIR} for the shipped backbone, else {ref.CANDIDATES_DIR}/<backbone>)",
    )
    parser.add_argument(
        "--fp16-weights",
        action=argparse.BooleanOptionalAction,
        help="store the weights as float16, cast to float32 at load (default: reference.SHIPPED_FP16_WEIGHTS for the "
        "shipped backbone, off for the others)",
    )
    parser.add_argument("--legacy", action="store_true", help="use the TorchScript exporter instead of dynamo")
    parser.add_argument("--no-fallback", action="store_true", help="fail if the dynamo exporter fails")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export, check and describe the model; returns the exit status."""
    args = parse_args(argv)
    backbone = ref.BACKBONES[args.backbone]
    default_dir = ref.DATA_DIR if backbone == ref.SHIPPED else ref.CANDIDATES_DIR / backbone.name
    output_dir: Path = (args.output_dir or default_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = output_dir / backbone.file_name

    fp16_weights = args.fp16_weights
    if fp16_weights is None:
        fp16_weights = ref.SHIPPED_FP16_WEIGHTS and backbone == ref.SHIPPED
    model = ref.build_model(backbone, fp16_weights=fp16_weights)
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch axis.
    example = torch.zeros(2, 3, backbone.input_size, backbone.input_size)

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
    saved = store_weights_as_float16(proto) if fp16_weights else 0
    check_interface(proto, backbone)
    # Write beside the target, then rename: a crash never leaves a half-written model for the runtime to load.
    partial = onnx_path.with_suffix(".onnx.partial")
    onnx.save_model(proto, str(partial), save_as_external_data=False)
    partial.replace(onnx_path)

    diff = check_parity(model, onnx_path, backbone.input_size)
    sanity = check_imagenet(onnx_path, backbone.input_size)

    card = model_card(onnx_path, OPSET, backbone, fp16_weights)
    write_json(output_dir / ref.MODEL_JSON_PATH.name, card)
    card = update_model_card(onnx_path)  # the outputs, as expose_embeddings.py alone would write them

    print(f"exporter:      {exporter} (torch {torch.__version__}, onnx {onnx.__version__}, opset {OPSET})")
    print(f"export time:   {export_seconds:.1f} s")
    print(f"onnx:          {onnx_path} ({onnx_path.stat().st_size:,} bytes)")
    print(f"sha256:        {card['sha256']}")
    print(f"parity:        max |onnxruntime - torch| = {diff:.3g} on 3 random images")
    print(f"imagenet:      {sanity}")
    print(f"weights:       {'float16 (' + format(saved, ',') + ' bytes saved)' if fp16_weights else 'float32'}")
    print(f"model card:    {output_dir / ref.MODEL_JSON_PATH.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
