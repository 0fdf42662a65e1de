"""The loader: every odd photo gives the model a sane crop, every hostile one a typed refusal."""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
import pytest

from refund_sorter.errors import ErrorCode, ImageError
from refund_sorter.vision.images import CROP_FRACTION, MODEL_SIZE, load_image, sniff_format, to_model_input
from refund_sorter_cli.samples import encode, photo_image
from tests.odd_images import OddImage, odd_images, with_orientation

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 64_000_000}
CASES = odd_images()


def _load(data: bytes) -> np.ndarray:
    return load_image(data, **LIMITS)


@pytest.mark.parametrize("case", [c for c in CASES if c.expect == "ok"], ids=lambda c: c.name)
def test_accepted_images_give_an_rgb_crop(case: OddImage) -> None:
    crop = _load(case.data)
    assert crop.shape == (MODEL_SIZE, MODEL_SIZE, 3)
    assert crop.dtype == np.uint8


@pytest.mark.parametrize("case", [c for c in CASES if c.expect != "ok"], ids=lambda c: c.name)
def test_refused_images_raise_their_code_and_nothing_else(case: OddImage) -> None:
    # GIVEN a hostile file WHEN it is loaded with warnings turned into errors (none may escape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as refused:
            _load(case.data)
    # THEN the refusal carries the stable code and a message for people
    assert refused.value.code == ErrorCode(case.expect)
    assert refused.value.message


def test_corpus_has_the_kinds_the_issue_asks_for() -> None:
    assert len(CASES) >= 20
    assert {c.expect for c in CASES} >= {
        e.value
        for e in ErrorCode
        if e.name in {"EMPTY_FILE", "NOT_AN_IMAGE", "CORRUPT_IMAGE", "UNSUPPORTED_FORMAT", "DECOMPRESSION_BOMB"}
    }


def test_file_over_the_byte_cap_is_refused_before_decoding() -> None:
    data = encode(photo_image("skimage/coffee"), "PNG")
    with pytest.raises(ImageError) as refused:
        load_image(data, max_bytes=len(data) - 1, max_pixels=LIMITS["max_pixels"])
    assert refused.value.code is ErrorCode.FILE_TOO_LARGE


def test_pixel_limit_is_a_setting() -> None:
    data = encode(photo_image("skimage/coffee"), "PNG")  # 600×400
    with pytest.raises(ImageError) as refused:
        load_image(data, max_bytes=LIMITS["max_bytes"], max_pixels=600 * 400 - 1)
    assert refused.value.code is ErrorCode.DECOMPRESSION_BOMB


def test_bomb_is_refused_fast_without_allocating_its_pixels() -> None:
    # 10 gigapixels of 1-bit PNG would need >1 GB decoded; the header check must stop it first.
    bomb = next(c for c in CASES if c.name == "decompression bomb png")
    started = time.process_time()
    with pytest.raises(ImageError):
        _load(bomb.data)
    assert time.process_time() - started < 0.5  # CPU seconds, not wall time: a real decode takes minutes


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_honoured(orientation: int) -> None:
    coffee = photo_image("skimage/coffee")
    upright = _load(with_orientation(coffee, 1)).astype(np.int16)
    turned = _load(with_orientation(coffee, orientation)).astype(np.int16)
    # JPEG re-encoding of turned blocks differs a little; a wrong orientation differs a lot (~40 levels).
    assert np.abs(upright - turned).mean() < 6


def test_transparency_is_composited_on_white() -> None:
    from PIL import Image

    clear = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    crop = _load(encode(clear, "PNG"))
    assert (crop == 255).all()


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    case = next(c for c in CASES if c.name == "16-bit png")
    grey = next(c for c in CASES if c.name == "greyscale jpeg")
    # Clipping 16-bit values at 255 would give an all-white crop; scaled, it matches the 8-bit greyscale.
    assert abs(float(_load(case.data).mean()) - float(_load(grey.data).mean())) < 3


def test_animated_gif_uses_the_first_frame() -> None:
    animated = next(c for c in CASES if c.name == "animated gif")
    still = next(c for c in CASES if c.name == "gif")
    assert np.abs(_load(animated.data).astype(int) - _load(still.data).astype(int)).mean() < 12


def test_jpeg_draft_decoding_keeps_the_picture() -> None:
    # GIVEN a 12 MP phone-sized JPEG, which the loader decodes at 1/8 scale
    from PIL import Image

    big = photo_image("skimage/coffee").resize((4000, 3000), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    # WHEN it is loaded, THEN the crop matches one made from a full decode of the same file
    with Image.open(io.BytesIO(data)) as full:
        side = round(3000 * CROP_FRACTION)
        box = ((4000 - side) // 2, (3000 - side) // 2, (4000 - side) // 2 + side, (3000 - side) // 2 + side)
        reference = np.asarray(full.convert("RGB").resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.BICUBIC, box=box))
    assert np.abs(_load(data).astype(int) - reference.astype(int)).mean() < 4


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"GIF89a", "GIF"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "WEBP"),
        (b"BM", "BMP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"<html>", None),
        (b"RIFF\0\0\0\0AVI ", None),
    ],
)
def test_sniff_format(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head) == fmt


def test_model_input_layout_and_normalisation() -> None:
    crops = [np.full((MODEL_SIZE, MODEL_SIZE, 3), value, np.uint8) for value in (0, 127, 255)]
    batch = to_model_input(crops)
    assert batch.shape == (3, 3, MODEL_SIZE, MODEL_SIZE)
    assert batch.dtype == np.float32
    assert batch[:, 0, 0, 0].tolist() == pytest.approx([-127 / 128, 0.0, 1.0])
