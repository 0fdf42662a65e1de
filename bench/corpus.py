"""The benchmark corpus: phone-like 8–12 MP JPEGs made from the real photos that ship inside wheels.

Each photo is a seeded random crop of one of :data:`refund_sorter.samples.PHOTOS`, maybe mirrored, colour
jittered, upscaled to a phone sensor size, given sensor-like grain (so the JPEG is as big as a phone's,
which is what decoding costs), encoded at a quality between 70 and 95 and stored turned with the EXIF
orientation tag (1, 3, 6 or 8) that turns it back upright — the way phones store portrait shots.

Deterministic: the same :data:`VERSION` and seed give the same bytes. The corpus is cached in
``bench/corpus/<version>/`` (gitignored) and rebuilt only when the version key changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageEnhance

# Bump when anything below changes what the files contain.
VERSION: Final = 2
SEED: Final = 20261125
COUNT: Final = 112  # 7 batches of 16
CORPUS_ROOT: Final = Path(__file__).parent / "corpus"

# (width, height) of the upright photo: common 12 MP and 8 MP phone sensors.
SENSOR_SIZES: Final = ((4000, 3000), (4032, 3024), (3264, 2448))
ORIENTATIONS: Final = (1, 3, 6, 8)
# What to store so that applying the tag (as ImageOps.exif_transpose does) gives the upright photo back.
STORE_TRANSPOSE: Final = {
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
QUALITY_RANGE: Final = (70, 95)
# Grain: a fixed bank of Gaussian noise (made once per worker from the seed), cut at a random offset per photo.
# Lower qualities quantise grain away, so they get more of it: sizes land around 2–5 MB like phone JPEGs.
_BANK_SHAPE: Final = (4300, 4300)
_bank: np.ndarray | None = None


@dataclass(frozen=True)
class Spec:
    index: int
    source: str
    width: int
    height: int
    orientation: int
    quality: int
    grain: float
    mirrored: bool
    crop: tuple[float, float, float, float]
    jitter: tuple[float, float, float]

    @property
    def name(self) -> str:
        return f"{self.index:03d}-{self.source.replace('/', '_')}-{self.width}x{self.height}-o{self.orientation}.jpg"


def key() -> str:
    """The cache key: the version, the seed, the count and the source photos' names."""
    from refund_sorter_cli.samples import PHOTOS

    text = json.dumps([VERSION, SEED, COUNT, sorted(PHOTOS)])
    return f"v{VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def specs() -> list[Spec]:
    from refund_sorter_cli.samples import PHOTOS

    names = sorted(PHOTOS)
    rng = np.random.default_rng(SEED)
    out = []
    for index in range(COUNT):
        width, height = SENSOR_SIZES[int(rng.integers(len(SENSOR_SIZES)))]
        if rng.random() < 0.3:  # a portrait shot
            width, height = height, width
        quality = int(rng.integers(QUALITY_RANGE[0], QUALITY_RANGE[1] + 1))
        area = float(rng.uniform(0.45, 1.0))
        out.append(
            Spec(
                index=index,
                source=names[index % len(names)],
                width=width,
                height=height,
                orientation=ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))],
                quality=quality,
                grain=round(float(rng.uniform(4.0, 5.5)) + (QUALITY_RANGE[1] - quality) * 0.22, 2),
                mirrored=bool(rng.random() < 0.5),
                crop=(area, float(rng.random()), float(rng.random()), float(rng.integers(1 << 30))),
                jitter=(float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.7, 1.3))),
            )
        )
    return out


def _grain_bank() -> np.ndarray:
    global _bank  # noqa: PLW0603 - one bank per worker process, made on first use
    if _bank is None:
        _bank = np.random.default_rng(SEED).standard_normal(_BANK_SHAPE, dtype=np.float32)
    return _bank


def render(spec: Spec) -> bytes:
    """One corpus JPEG (deterministic for its spec)."""
    from refund_sorter_cli.samples import encode, photo_image

    source = photo_image(spec.source)
    src_w, src_h = source.size
    area, fx, fy, offset_seed = spec.crop
    # The largest box of the target's aspect ratio inside the source, scaled to `area` of it, at a random place.
    aspect = spec.width / spec.height
    box_w, box_h = (src_w, src_w / aspect) if src_w / src_h < aspect else (src_h * aspect, src_h)
    box_w, box_h = box_w * area**0.5, box_h * area**0.5
    left, top = fx * (src_w - box_w), fy * (src_h - box_h)
    small = source.resize(
        (max(1, round(box_w)), max(1, round(box_h))),
        Image.Resampling.BICUBIC,
        box=(left, top, left + box_w, top + box_h),
    )
    brightness, contrast, saturation = spec.jitter
    small = ImageEnhance.Brightness(small).enhance(brightness)
    small = ImageEnhance.Contrast(small).enhance(contrast)
    small = ImageEnhance.Color(small).enhance(saturation)
    if spec.mirrored:
        small = small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    big = np.asarray(small.resize((spec.width, spec.height), Image.Resampling.BICUBIC))
    bank = _grain_bank()
    offsets = np.random.default_rng(int(offset_seed))
    dy = int(offsets.integers(bank.shape[0] - spec.height + 1))
    dx = int(offsets.integers(bank.shape[1] - spec.width + 1))
    # The bank is square, so a portrait photo reads it transposed: same statistics, different grain.
    grain = (bank[dy : dy + spec.height, dx : dx + spec.width] * spec.grain).astype(np.int16)
    pixels = big.astype(np.int16)
    pixels += grain[..., None]
    np.clip(pixels, 0, 255, out=pixels)
    upright = Image.fromarray(pixels.astype(np.uint8), "RGB")
    turn = STORE_TRANSPOSE[spec.orientation]
    stored = upright.transpose(turn) if turn is not None else upright
    exif = Image.Exif()
    exif[0x0112] = spec.orientation
    exif[0x010F] = "refund-sorter bench"  # Make
    return encode(stored, "JPEG", quality=spec.quality, exif=exif.tobytes())


def _write(args: tuple[Spec, str]) -> tuple[str, int]:
    spec, folder = args
    data = render(spec)
    path = Path(folder) / spec.name
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return spec.name, len(data)


@dataclass(frozen=True)
class Corpus:
    folder: Path
    specs: list[Spec]
    built_seconds: float | None  # None: reused from the cache

    def paths(self) -> list[Path]:
        return [self.folder / s.name for s in self.specs]

    def read_all(self) -> list[bytes]:
        return [p.read_bytes() for p in self.paths()]

    def summary(self, sizes: list[int]) -> dict[str, object]:
        mb = np.array(sizes) / 1e6
        return {
            "key": self.folder.name,
            "folder": str(
                self.folder.relative_to(Path.cwd()) if self.folder.is_relative_to(Path.cwd()) else self.folder
            ),
            "photos": len(self.specs),
            "seed": SEED,
            "built_seconds": self.built_seconds,
            "reused_from_cache": self.built_seconds is None,
            "megapixels": sorted({round(s.width * s.height / 1e6, 1) for s in self.specs}),
            "sizes": sorted({f"{max(s.width, s.height)}x{min(s.width, s.height)}" for s in self.specs}),
            "orientations": {str(o): sum(s.orientation == o for s in self.specs) for o in ORIENTATIONS},
            "quality_min_max": [min(s.quality for s in self.specs), max(s.quality for s in self.specs)],
            "file_mb": {
                "min": round(float(mb.min()), 2),
                "median": round(float(np.median(mb)), 2),
                "mean": round(float(mb.mean()), 2),
                "max": round(float(mb.max()), 2),
                "total": round(float(mb.sum()), 1),
            },
            "sources": sorted({s.source for s in self.specs}),
        }


def ensure(log: bool = True) -> Corpus:
    """The cached corpus, built (in parallel, one process per core) if this version is not on disk yet."""
    folder = CORPUS_ROOT / key()
    wanted = specs()
    manifest = folder / "manifest.json"
    if manifest.is_file() and all((folder / s.name).is_file() for s in wanted):
        return Corpus(folder, wanted, None)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if log:
        print(f"building the corpus: {len(wanted)} JPEGs in {folder} (once; cached by version) …", flush=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        written = dict(pool.map(_write, [(s, str(folder)) for s in wanted]))
    built = round(time.perf_counter() - started, 1)
    manifest.write_text(
        json.dumps({"key": folder.name, "photos": [asdict(s) | {"bytes": written[s.name]} for s in wanted]}, indent=1)
    )
    return Corpus(folder, wanted, built)
