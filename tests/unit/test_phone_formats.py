"""HEIC/HEIF (pi-heif) and AVIF (Pillow): decoded, turned upright exactly once, and told apart by their brands.

The HEIC files are fixtures (tests/fixtures/formats/make_fixtures.py says where they came from: nothing we
depend on can write HEIC); AVIF files are also written here by Pillow. Every fixture shows skimage's coffee
photo resized to 240×160 once its container transforms are applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from refund_sorter.errors import ErrorCode, ImageError
from refund_sorter.vision.images import load_image, sniff_format
from refund_sorter_cli.samples import encode, photo_image
from tests.odd_images import FORMAT_FIXTURES, ORIENTATION_INVERSE

if TYPE_CHECKING:
    from pathlib import Path

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 64_000_000}
# Lossy coding moves the crop ~2-4 levels on average; a wrong turn or mirror moves it ~70-90.
SAME_PICTURE = 8


def _crop(data: bytes) -> np.ndarray:
    return load_image(data, **LIMITS).astype(np.int16)


def _upright() -> Image.Image:
    return photo_image("skimage/coffee").resize((240, 160))


def _reference(transpose: Image.Transpose | None = None) -> np.ndarray:
    upright = _upright()
    return _crop(encode(upright if transpose is None else upright.transpose(transpose), "PNG"))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize("name", ["coffee-irot.heic", "coffee-irot.avif"])
def test_container_rotation_is_applied_once(name: str) -> None:
    # GIVEN a photo stored sideways with an irot transform AND an EXIF orientation of 6, as an iPhone writes it
    data = (FORMAT_FIXTURES / name).read_bytes()
    # WHEN it is decoded
    crop = _crop(data)
    # THEN it is upright: not left sideways (no turn) and not upside down (turned by irot, then again by EXIF)
    assert _distance(crop, _reference()) < SAME_PICTURE
    assert _distance(crop, _reference(Image.Transpose.ROTATE_180)) > 5 * SAME_PICTURE
    assert _distance(crop, _reference(Image.Transpose.ROTATE_90)) > 5 * SAME_PICTURE


@pytest.mark.parametrize("name", ["coffee-exif-only.heic", "coffee-exif-only.avif"])
def test_exif_orientation_without_a_container_transform_is_not_applied(name: str) -> None:
    # GIVEN a HEIF/AVIF whose EXIF says "turn 90°" but whose container has no irot (heif-enc 1.15 writes these)
    data = (FORMAT_FIXTURES / name).read_bytes()
    # THEN it shows as stored, as libheif and browsers show it: in HEIF only the container's transforms count
    assert _distance(_crop(data), _reference(Image.Transpose.ROTATE_90)) < SAME_PICTURE


@pytest.mark.parametrize("orientation", range(2, 9))
def test_avif_orientation_is_honoured(orientation: int) -> None:
    # GIVEN an AVIF written by Pillow with pixels stored turned; Pillow writes the orientation as irot/imir
    inverse = ORIENTATION_INVERSE[orientation]
    assert inverse is not None
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_upright().transpose(inverse), "AVIF", quality=70, speed=10, exif=exif.tobytes())
    # THEN the crop is the upright photo's
    assert _distance(_crop(data), _reference()) < SAME_PICTURE


def test_heic_pixel_limit_is_checked_from_the_header() -> None:
    data = (FORMAT_FIXTURES / "coffee-irot.heic").read_bytes()
    with pytest.raises(ImageError) as refused:
        load_image(data, max_bytes=LIMITS["max_bytes"], max_pixels=240 * 160 - 1)
    assert refused.value.code is ErrorCode.DECOMPRESSION_BOMB


def test_a_heic_cut_short_is_corrupt_not_unsupported() -> None:
    data = (FORMAT_FIXTURES / "coffee-irot.heic").read_bytes()
    with pytest.raises(ImageError) as refused:
        load_image(data[: len(data) // 2], **LIMITS)
    assert refused.value.code is ErrorCode.CORRUPT_IMAGE
    assert "HEIF" in refused.value.message


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (4 + len(body)).to_bytes(4, "big") + body + b"\x00\x00\x00\x08meta"


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIF"),  # an iPhone photo
        (_ftyp(b"heix", b"mif1"), "HEIF"),
        (_ftyp(b"hevc", b"msf1"), "HEIF"),  # an image sequence (burst): its primary image is read
        (_ftyp(b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"mif1", b"miaf"), "HEIF"),  # only "a HEIF container": libheif decides
        (_ftyp(b"avif", b"mif1", b"miaf"), "AVIF"),
        (_ftyp(b"avis", b"msf1"), "AVIF"),
        (_ftyp(b"mif1", b"miaf", b"avif"), "AVIF"),  # the compatible brands decide
        (_ftyp(b"mif1", b"miaf", b"avif")[:16], "HEIF"),  # 16 bytes: the major brand only
        (_ftyp(b"isom", b"mp41"), None),  # an MP4 video
        (_ftyp(b"qt  "), None),  # a QuickTime (Live Photo) video
        (_ftyp(b"crx ", b"isom"), None),  # a Canon raw
    ],
)
def test_sniff_iso_media(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head) == fmt


@pytest.mark.parametrize("fixture", sorted(FORMAT_FIXTURES.glob("*.heic")) + sorted(FORMAT_FIXTURES.glob("*.avif")))
def test_fixtures_are_sniffed_by_their_brands(fixture: Path) -> None:
    assert sniff_format(fixture.read_bytes()[:64]) == ("HEIF" if fixture.suffix == ".heic" else "AVIF")


def test_multi_picture_jpeg_is_read_as_its_first_picture() -> None:
    # GIVEN an MPO (a camera's JPEG with a second picture appended), which Pillow opens as format "MPO"
    coffee = photo_image("skimage/coffee").resize((2400, 1600))  # large enough for a 1/4-scale draft decode
    mpo = encode(coffee, "MPO", save_all=True, append_images=[coffee.transpose(Image.Transpose.ROTATE_180)])
    # THEN the crop is the first picture's, draft-decoded exactly as the same picture sent as a plain JPEG
    assert _distance(_crop(mpo), _crop(encode(coffee, "JPEG"))) == 0
