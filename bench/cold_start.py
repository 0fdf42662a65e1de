"""Cold start: fresh processes (``bench/cold_start_child.py``) import the predict handler and answer their first
``POST /predictions`` against the stack's moto server; medians, the first request split into its parts, and
``-X importtime`` self times by package."""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import corpus as corpus_module
from bench.common import ROOT, median
from bench.predict import post_event

if TYPE_CHECKING:
    from collections.abc import Callable

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def measured_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the measured fresh processes. The layer ships .pyc compiled for its Python
    (layers/model/Makefile); this shell may say PYTHONDONTWRITEBYTECODE. So: bytecode in a cache under
    bench/corpus/ (gitignored), primed by one unmeasured run, then every measured process reads it, as Lambda
    reads the layer's."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(corpus_module.CORPUS_ROOT / "pycache")
    return env


def event_file(folder: Path, photo: bytes) -> Path:
    """The POST /predictions event with ``photo`` inline, written for the fresh processes to read."""
    path = folder / "event.json"
    path.write_text(json.dumps(post_event(json.dumps({"image_base64": base64.b64encode(photo).decode()}))))
    return path


def fresh_process(arguments: list[str], env: dict[str, str], out_path: Path) -> dict[str, Any]:
    """``python ARGUMENTS`` from the repo root, its output unread; returns the stamps it wrote to ``out_path``
    (a RuntimeError if its first POST was not answered 201)."""
    subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stamps: dict[str, Any] = json.loads(out_path.read_text())
    if stamps["status"] != 201:
        raise RuntimeError(f"{' '.join(arguments)}: the first POST answered {stamps['status']}: {stamps.get('body')}")
    return stamps


def cold_start(env: dict[str, str], data: bytes, runs: int, handler_dir: str = "functions/predict") -> dict[str, Any]:
    """Fresh processes (bench/cold_start_child.py) that import the handler and answer one POST; medians of
    ``runs``. ``handler_dir``: another copy of the handler, to measure a proposed change before making it."""
    env = measured_environment(env)
    with tempfile.TemporaryDirectory(prefix="refund-sorter-bench-") as tmp:
        event_path = event_file(Path(tmp), data)
        child = ["bench/cold_start_child.py", str(event_path)]
        fresh_process([*child, str(Path(tmp) / "prime.json"), handler_dir], env, Path(tmp) / "prime.json")
        samples = []
        for i in range(runs):
            out_path = Path(tmp) / f"cold-{i}.json"
            spawned = time.time()
            stamps = fresh_process([*child, str(out_path), handler_dir], env, out_path)
            stamps["interpreter_start_ms"] = (stamps["process_started_wall"] - spawned) * 1000
            samples.append(stamps)
        # One more run under -X importtime, to see which packages the time goes to (it slows imports a little).
        traced = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "bench/cold_start_child.py",
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
