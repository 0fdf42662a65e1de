"""Give the ONNX classifier a second output: the pooled 1280-d features its final Gemm consumes.

Run from the repository root with any Python that has the ``onnx`` package (no PyTorch needed; ``make model``
runs it right after the export, ``make model-embeddings`` runs it alone on the committed file)::

    .venv-model/bin/python tools/model/expose_embeddings.py [--model PATH]

The edit only *names an existing tensor as a graph output*: no node, weight or attribute changes, so the
1000 logits stay bit-identical (``tests/unit/test_model.py`` checks that against the logits-only graph, and
that ``embeddings @ W.T + b`` is the logits). A custom head trained on these features (refund_sorter.heads)
then costs one small matrix product per photo instead of a second network.

The edit is idempotent (a model that already has the output is left as it is), and ``model.json`` is
rewritten with the new file's hash, so the version a Result names changes with the bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Final

import onnx

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DATA_DIR: Final = REPO_ROOT / "layers" / "model" / "refund_sorter" / "data"
LOGITS: Final = "logits"
EMBEDDINGS: Final = "embeddings"


def final_gemm(graph: onnx.GraphProto) -> onnx.NodeProto:
    """The Gemm that produces the ``logits`` output (the classifier's last layer)."""
    producers = [node for node in graph.node if LOGITS in node.output]
    if len(producers) != 1 or producers[0].op_type != "Gemm":
        found = [(node.op_type, node.name) for node in producers]
        raise RuntimeError(f"expected one Gemm producing {LOGITS!r}, found {found}")
    return producers[0]


def expose_embeddings(proto: onnx.ModelProto) -> bool:
    """Add the final Gemm's input as the graph output ``embeddings`` ``float32[batch, features]``, in place.

    The tensor keeps its name inside the graph: the Gemm is rewired to read the renamed tensor, which the
    node that made it now writes. Returns ``False`` when the output is there already.
    """
    graph = proto.graph
    if any(output.name == EMBEDDINGS for output in graph.output):
        return False
    gemm = final_gemm(graph)
    pooled = gemm.input[0]
    weights = next(t for t in graph.initializer if t.name == gemm.input[1])
    trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
    features = weights.dims[1] if trans_b else weights.dims[0]
    # Rename the tensor in the one node that writes it and every node that reads it: the graph's computation
    # is unchanged, and the output's name is part of the runtime's interface, not an exporter's internal name.
    for node in graph.node:
        node.output[:] = [EMBEDDINGS if name == pooled else name for name in node.output]
        node.input[:] = [EMBEDDINGS if name == pooled else name for name in node.input]
    for info in list(graph.value_info):
        if info.name == pooled:
            graph.value_info.remove(info)
    batch = graph.output[0].type.tensor_type.shape.dim[0].dim_param or "batch"
    graph.output.append(onnx.helper.make_tensor_value_info(EMBEDDINGS, onnx.TensorProto.FLOAT, [batch, features]))
    onnx.checker.check_model(proto, full_check=True)
    return True


def update_model_card(onnx_path: Path) -> dict[str, object]:
    """Rewrite ``model.json`` beside the model with the file's new hash and its outputs."""
    card_path = onnx_path.parent / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    card.update({"version": digest[:12], "sha256": digest, "outputs": [LOGITS, EMBEDDINGS]})
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DATA_DIR / "efficientnet_lite0.onnx", help="%(default)s")
    args = parser.parse_args(argv)
    proto = onnx.load(str(args.model))
    if expose_embeddings(proto):
        partial = args.model.with_suffix(".onnx.partial")
        onnx.save_model(proto, str(partial), save_as_external_data=False)
        partial.replace(args.model)
        print(f"{args.model}: added output {EMBEDDINGS!r}")
    else:
        print(f"{args.model}: already has output {EMBEDDINGS!r}")
    card = update_model_card(args.model)
    print(f"model.json: version {card['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
