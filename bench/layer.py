"""The model layer's size, unzipped, as ``sam build`` left it (Lambda's limit is 250 MB for all layers)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any, Final

from bench.common import ROOT

LAYER_DIR: Final = ROOT / ".aws-sam" / "build" / "ModelLayer"


def layer_size() -> dict[str, Any]:
    """The model layer as ``sam build`` left it (unzipped); else ask infra/tools.mk; else null with the reason."""
    if LAYER_DIR.is_dir():
        total = int(
            subprocess.run(["du", "-sb", str(LAYER_DIR)], capture_output=True, text=True, check=True).stdout.split()[0]
        )
        python = LAYER_DIR / "python"
        parts = {}
        if python.is_dir():
            listing = subprocess.run(
                ["du", "-sb", *sorted(str(p) for p in python.iterdir())], capture_output=True, text=True, check=True
            )
            sizes = sorted(
                ((int(n), Path(p).name) for n, p in (line.split("\t", 1) for line in listing.stdout.splitlines())),
                reverse=True,
            )
            parts = {name: round(n / 1e6, 1) for n, name in sizes[:10]}
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(LAYER_DIR.stat().st_mtime))
        return {
            "source": "du -sb .aws-sam/build/ModelLayer",
            "bytes": total,
            "mb": round(total / 1e6, 1),
            "mib": round(total / 2**20, 1),
            "built": built,
            "largest_mb": parts,
        }
    if (ROOT / "infra" / "tools.mk").is_file():
        run = subprocess.run(
            ["make", "-f", "infra/tools.mk", "BIN=.venv/bin", "PYTHON=python3", "layer-size"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"unzipped: (\d+) bytes", run.stdout)
        if found:
            total = int(found[1])
            return {"source": "make -f infra/tools.mk layer-size", "bytes": total, "mb": round(total / 1e6, 1)}
        return {
            "bytes": None,
            # one line: it lands in a cell of bench/results.md's table
            "reason": f"no built layer (make build first): {' '.join((run.stdout + run.stderr).split())[-200:]}",
        }
    return {"bytes": None, "reason": "no .aws-sam/build/ModelLayer and no infra/tools.mk: run make build, then rerun"}
