"""SnapStart, emulated: what moves before the snapshot, and the first request of a restored process vs a cold start.

Each sample is a fresh process (``python -m bench.snapstart --child MODE EVENT OUT``) that imports the predict
handler (Lambda's init) and answers one ``POST /predictions`` against a moto server:

- ``cold``: import, then the first request (today's cold start: it loads onnxruntime and the model);
- ``snapstart``: import, then the before-snapshot hooks (what Lambda runs once per published version, before
  saving the process), then the after-restore hooks, then the first request. A restored environment pays the
  restore itself, the after-restore hooks and that first request; the import and the before-snapshot hooks are
  paid once per version, by nobody's request.

What cannot be measured here: the restore itself (Lambda loading the snapshot's memory, which AWS documents as
typically a few hundred milliseconds and which depends on the snapshot's size and cache state), and Lambda's
page-in of a cold snapshot; nor the 10 s init limit's interplay with the hooks. Both modes run the same Python
with the same bytecode cache, against the same moto server, interleaved.

Standalone: ``.venv/bin/python -m bench.snapstart [--runs N]`` (starts its own local stack, writes
bench/snapstart.json); ``make bench`` runs :func:`measure` with its own server and photo.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402 - stdlib only before the handler, so the child's import stamp is the handler's own
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODES = ("cold", "snapstart")


# ------------------------------------------------------------------------------------------------ the child


def run_hooks(registry: list[Any]) -> float:
    """Call a snapshot_restore_py registry as Lambda's runtime does; returns the milliseconds it took."""
    started = time.perf_counter()
    for function, args, kwargs in registry:
        function(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


def child(mode: str, event_path: str, out_path: str) -> None:
    from bench.cold_start_child import Context  # stdlib only

    event = json.loads(Path(event_path).read_text())
    sys.path.insert(0, str(ROOT / "functions" / "predict"))  # Lambda's task root
    stamps: dict[str, Any] = {"mode": mode}
    started = time.perf_counter()
    import predict_handler  # type: ignore[import-not-found]

    stamps["init_ms"] = (time.perf_counter() - started) * 1000
    if mode == "snapstart":
        import snapshot_restore_py

        stamps["before_snapshot_ms"] = run_hooks(snapshot_restore_py.get_before_snapshot())
        stamps["after_restore_ms"] = run_hooks(snapshot_restore_py.get_after_restore())
    with contextlib.redirect_stdout(sys.stderr):  # Powertools' metrics go to stdout
        started = time.perf_counter()
        reply = predict_handler.lambda_handler(event, Context())
        stamps["first_request_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        predict_handler.lambda_handler(event, Context())
        stamps["second_request_ms"] = (time.perf_counter() - started) * 1000
    stamps["status"] = reply["statusCode"]
    Path(out_path).write_text(json.dumps(stamps))
    os._exit(0)  # no atexit work (Powertools flushes, thread pools) in the measured process's tail


# ----------------------------------------------------------------------------------------------- the parent


def measure(env: dict[str, str], photo: bytes, runs: int) -> dict[str, Any]:
    """``runs`` fresh processes per mode, interleaved, against the moto server ``env`` points at; medians."""
    from bench.cold_start import event_file, fresh_process, measured_environment

    env = measured_environment(env)  # the same bytecode cache as bench.cold_start's
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="refund-sorter-snapstart-") as tmp:
        event_path = event_file(Path(tmp), photo)
        for i in range(runs + 1):  # the first round primes the bytecode cache and is not counted
            for mode in MODES:
                out_path = Path(tmp) / f"{mode}-{i}.json"
                child = ["-m", "bench.snapstart", "--child", mode, str(event_path), str(out_path)]
                stamps = fresh_process(child, env, out_path)
                if i:
                    samples[mode].append(stamps)
    return summarise(samples, runs)


def summarise(samples: dict[str, list[dict[str, Any]]], runs: int) -> dict[str, Any]:
    def med(mode: str, key: str) -> float:
        return round(statistics.median(s[key] for s in samples[mode]), 1)

    cold_total = med("cold", "init_ms") + med("cold", "first_request_ms")
    restored = med("snapstart", "after_restore_ms") + med("snapstart", "first_request_ms")
    return {
        "what": "fresh processes, first POST /predictions via the handler in-process against moto; medians",
        "runs_per_mode": runs,
        "cold": {"init_ms": med("cold", "init_ms"), "first_request_ms": med("cold", "first_request_ms")},
        "snapstart": {
            "init_ms": med("snapstart", "init_ms"),
            "before_snapshot_ms": med("snapstart", "before_snapshot_ms"),
            "after_restore_ms": med("snapstart", "after_restore_ms"),
            "first_request_ms": med("snapstart", "first_request_ms"),
        },
        "warm_request_ms": med("cold", "second_request_ms"),
        "cold_init_plus_first_request_ms": round(cold_total, 1),
        "restored_after_restore_plus_first_request_ms": round(restored, 1),
        "moved_before_snapshot_ms": round(med("snapstart", "init_ms") + med("snapstart", "before_snapshot_ms"), 1),
        "restored_vs_cold": round(restored / cold_total, 3),
        "not_measured": "Lambda's restore of the snapshot itself (loading its memory), which only AWS can show",
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The bench report's lines (bench/results.md)."""
    cold, snap = result["cold"], result["snapstart"]
    return [
        f"- SnapStart, emulated ({result['runs_per_mode']} fresh processes per mode, medians): cold start = init "
        f"{cold['init_ms']:.0f} ms + first request {cold['first_request_ms']:.0f} ms; with the hooks, init "
        f"{snap['init_ms']:.0f} ms + before-snapshot {snap['before_snapshot_ms']:.0f} ms move before the snapshot, "
        f"and a restored process pays after-restore {snap['after_restore_ms']:.1f} ms + first request "
        f"{snap['first_request_ms']:.0f} ms ({result['restored_vs_cold']}× the cold start; warm request "
        f"{result['warm_request_ms']:.0f} ms), plus Lambda's restore itself, which cannot be measured here."
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.snapstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per mode")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "EVENT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    from bench.common import local_stack
    from refund_sorter_cli.local_stack import function_environment
    from refund_sorter_cli.samples import photo_bytes
    from refund_sorter_cli.template import Template

    with local_stack("snapstart") as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUND_SORTER_", "POWERTOOLS_"))}
        env |= stack.aws_environment | function_environment(Template(), "PredictFunction")
        result = measure(env, photo_bytes("skimage/coffee"), args.runs)
    result["photo"] = "skimage/coffee (PNG, 600×400)"
    out = ROOT / "bench" / "snapstart.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(summary_lines(result)))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
