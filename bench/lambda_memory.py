"""How to cap a local Lambda's memory at its MemorySize: address space (``RLIMIT_AS``), data (``RLIMIT_DATA``) or
resident memory (what Lambda's sandbox limits). Written to ``bench/lambda-memory.json`` and ``.md``.

For 1, 2, 8 and 16 onnxruntime threads, a fresh process loads the Sorter (the model) and classifies 4 photos from
``tests/fixtures/clothing``, then reports its address space (VmSize), data (VmData), resident (VmRSS) and peak
resident (VmHWM) memory; and the same run again under a 1,024 MB ``RLIMIT_AS`` and a 1,024 MB ``RLIMIT_DATA``
(the predict function's MemorySize), saying whether it still works. Run from the repo root:
``.venv/bin/python -m bench.lambda_memory``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
OUT: Final = ROOT / "bench"
LIMIT_MB: Final = 1024
THREADS: Final = (1, 2, 8, 16)
# A run takes seconds; one that has not ended by then never will.
HANG_SECONDS: Final = 180


def child(limit: str) -> None:
    """In the measured process: set the limit, classify, print the memory figures as JSON."""
    import resource

    if limit != "none":
        kind = {"as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA}[limit]
        resource.setrlimit(kind, (LIMIT_MB * 2**20, LIMIT_MB * 2**20))
    from refund_sorter.sources.files import photo_from_path
    from refund_sorter.vision.sorter import get_sorter

    sorter = get_sorter()
    photos = sorted((ROOT / "tests" / "fixtures" / "clothing").rglob("*.jp*g"))[:4]
    statuses = [
        o.result.status if o.result else "error"
        for o in sorter.classify([photo_from_path(p, sorter.settings) for p in photos])
    ]
    figures = {
        line.split(":")[0]: int(line.split()[1]) // 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.split(":")[0] in {"VmSize", "VmData", "VmRSS", "VmHWM"}
    }
    print(json.dumps({"statuses": statuses, "mb": figures}))


def measure(threads: int, limit: str) -> dict[str, Any]:
    environment = os.environ | {"REFUND_SORTER_INTRA_OP_THREADS": str(threads)}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.lambda_memory", "--child", limit],
            capture_output=True, text=True, env=environment, cwd=ROOT, check=False, timeout=HANG_SECONDS,
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # seen under RLIMIT_AS: a thread that cannot start, and a wait forever
        return {"threads": threads, "limit": limit, "works": False, "error": f"hung (killed after {HANG_SECONDS} s)"}
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["?"])[-1]
        return {"threads": threads, "limit": limit, "works": False, "error": last[:300]}
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"threads": threads, "limit": limit, "works": "error" not in answer["statuses"], **answer["mb"]}


def main() -> None:
    rows = [measure(threads, limit) for threads in THREADS for limit in ("none", "as", "data")]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "limit_mb": LIMIT_MB,
        "rows": rows,
    }
    (OUT / "lambda-memory.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# A local Lambda's memory cap: address space, data or resident memory",
        "",
        f"`.venv/bin/python -m bench.lambda_memory`, {report['when']}, {os.cpu_count()} CPUs. The Sorter classifies 4",
        f"photos in a fresh process; limits are {LIMIT_MB} MB (PredictFunction's MemorySize). MB: MiB.",
        "",
        "| onnxruntime threads | limit | works | VmSize (address space) | VmData | VmRSS | VmHWM (peak resident) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["works"]:
            figures = f"{row['VmSize']} | {row['VmData']} | {row['VmRSS']} | {row['VmHWM']}"
        else:
            figures = f"fails: {row.get('error', '')[:80]} | | |"
        lines.append(f"| {row['threads']} | {row['limit']} | {'yes' if row['works'] else 'no'} | {figures} |")
    lines += [
        "",
        "Lambda limits the sandbox's memory (resident), not its address space. The address space grows by ~65 MB",
        "per onnxruntime thread (stacks and malloc arenas reserved, not used) while resident memory stays flat, so",
        "an `RLIMIT_AS` at MemorySize fails runs that Lambda would run. `RLIMIT_DATA` works here, but it counts",
        "writable memory whether touched or not (VmData is about twice VmRSS above), so it is stricter than Lambda",
        "by a margin that moves with the thread count. `LocalLambdas` therefore watches each environment's peak",
        "resident memory (VmHWM, so a spike between two looks is seen too) and kills it past MemorySize",
        "(`Runtime.OutOfMemory`), as Lambda's sandbox would.",
        "",
    ]
    (OUT / "lambda-memory.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
