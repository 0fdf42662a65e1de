"""Decoding under a memory cap, as in Lambda: a photo decodes within the budget or is a clean ``failed`` Result.

Lambda kills a function that outgrows its memory (the API answers 502, a nightly chunk is retried until the photo
is ``processing_crashed``). Here the decode runs in a subprocess whose address space is capped
(``RLIMIT_AS``) at what it holds after the imports plus the decode budget and a margin: a decode that takes more
than the budget fails to allocate. Each hostile mode must either decode within the cap or be refused from its
header with ``decompression_bomb``; a MemoryError (even one turned into ``decompression_bomb``) or a crash fails.
onnxruntime is not loaded: decoding does not need it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refund_sorter.config import Settings
from tests.odd_images import HEIC_48MP, HEIC_48MP_10BIT, PIXEL_HEAVY, pixel_heavy

MIB = 1024 * 1024
# What the capped process needs besides the budget: the photo's bytes, the interpreter's own allocations.
MARGIN = 48 * MIB

CHILD = r"""
import json, resource, sys
from pathlib import Path

from refund_sorter.config import Settings
from refund_sorter.errors import ImageError
from refund_sorter.results import Result
from refund_sorter.vision.images import decode_photo, register_decoders

budget, margin = int(sys.argv[1]), int(sys.argv[2])
register_decoders()
settings = Settings()
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmSize:"):
        address_space = int(line.split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (address_space + budget + margin, resource.RLIM_INFINITY))
for path in sys.argv[3:]:
    data = Path(path).read_bytes()
    try:
        decode_photo(
            data,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            max_memory=budget,
            thumbnail_side=settings.thumbnail_side,
        )
        outcome = {"status": "ok"}
    except ImageError as exc:
        result = Result.from_error(id="p", source=path, error=exc, model_version="test")
        outcome = {"status": result.status.value, "code": result.error.code, "message": result.error.message}
    del data
    print(json.dumps({"photo": Path(path).name, **outcome}), flush=True)
"""


def decode_capped(photos: dict[str, bytes], budget: int, tmp_path: Path) -> dict[str, dict[str, str]]:
    paths = []
    for index, (name, data) in enumerate(photos.items()):
        path = tmp_path / f"{index:02d}"
        path.write_bytes(data)
        paths.append((name, path))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no per-thread reservations
    command = [sys.executable, "-c", CHILD, str(budget), str(MARGIN), *(str(p) for _, p in paths)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]  # a crash: the process Lambda would have killed
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["photo"] for o in outcomes] == [p.name for _, p in paths]
    return {name: outcome for (name, _), outcome in zip(paths, outcomes, strict=True)}


def assert_decoded_or_refused_from_the_header(outcomes: dict[str, dict[str, str]]) -> None:
    for name, outcome in outcomes.items():
        if outcome["status"] == "ok":
            continue
        assert outcome["status"] == "failed", name
        assert outcome["code"] == "decompression_bomb", (name, outcome)
        # Refused by the estimate, not by running out of memory halfway (MemoryError is decompression_bomb too).
        assert "MB to decode" in outcome["message"], (name, outcome)


def test_every_hostile_mode_decodes_within_the_cap_or_is_refused(tmp_path: Path) -> None:
    # GIVEN every mode Pillow opens, at 16 MP, and a quarter of the default budget (a quarter of the pixel limit)
    budget = Settings().decode_memory_mb * MIB // 4
    photos = {name: pixel_heavy(name, 4000, 4000) for name in PIXEL_HEAVY}
    # WHEN each is decoded in a process capped at its own size plus that budget
    outcomes = decode_capped(photos, budget, tmp_path)
    # THEN each decoded or was refused from its header, nothing ran out of memory
    assert_decoded_or_refused_from_the_header(outcomes)
    decoded = {name for name, outcome in outcomes.items() if outcome["status"] == "ok"}
    # The high-bit-depth greyscale now decodes (it needed 26 bytes a pixel: 400 MB here).
    assert {"I;16 png", "I;16B tiff", "I tiff", "F tiff", "RGB png", "RGB jpeg (phone)"} <= decoded
    assert {"RGBA png", "RGBA webp"}.isdisjoint(decoded)  # 8 and 16 bytes a pixel: over 120 MB at 16 MP


@pytest.mark.parametrize(
    ("name", "make"),
    [
        pytest.param("I;16 png", lambda: pixel_heavy("I;16 png"), id="8000x8000 16-bit png (the issue's 141 KB)"),
        pytest.param("F tiff", lambda: pixel_heavy("F tiff"), id="8000x8000 float tiff"),
        pytest.param("HEIC", HEIC_48MP.read_bytes, id="48 MP iPhone heic"),
        pytest.param("HEIC", HEIC_48MP_10BIT.read_bytes, id="48 MP 10-bit heic"),
    ],
)
def test_the_default_budget_decodes_the_largest_photos_within_the_cap(name: str, make: object, tmp_path: Path) -> None:
    # GIVEN the default budget, and a photo at the pixel limit (or a 48 MP phone's)
    budget = Settings().decode_memory_mb * MIB
    photos = {name: make()}  # type: ignore[operator]
    # WHEN it is decoded in a process capped at its own size plus that budget THEN it decodes
    assert decode_capped(photos, budget, tmp_path)[name]["status"] == "ok"
