"""The loader: every odd photo gives the model a sane crop, every hostile one a typed refusal."""

from __future__ import annotations

import io
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from refund_sorter.errors import ErrorCode, ImageError
from refund_sorter.vision import images
from refund_sorter.vision.images import CROP_FRACTION, MODEL_SIZE, load_image, sniff_format, to_model_input
from refund_sorter_cli.samples import encode, photo_image
from tests.odd_images import ORIENTATION_INVERSE, OddImage, odd_images, rgba_png, with_orientation

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


# ------------------------------------------------------------------ decoding within a memory budget (issue 20)


def _whole_image_rgb(image: Image.Image) -> Image.Image:
    """How photos were flattened before the budget: every conversion on the whole image at once."""
    if image.mode.startswith("I") or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        peak = float(pixels.max())
        full_scale = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0 if peak <= 255 else 65535.0
        image = Image.fromarray(np.clip(pixels * (255.0 / full_scale), 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _reference_crop(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        rgb = _whole_image_rgb(image)
    side = round(min(rgb.size) * CROP_FRACTION)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    box = (left, top, left + side, top + side)
    return np.asarray(rgb.resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.BICUBIC, box=box))


def _every_grey_and_alpha() -> Image.Image:
    """All 65,536 (grey, alpha) pairs, so compositing in strips is checked against every rounding case."""
    grey, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    return Image.merge("LA", (Image.fromarray(grey), Image.fromarray(alpha)))


def _sixteen_bit(coffee: Image.Image, mode: str) -> bytes:
    grey = np.asarray(coffee.convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey).convert(mode) if mode != "I;16" else Image.fromarray(grey), "TIFF")


def _palette(coffee: Image.Image) -> Image.Image:
    return coffee.convert("P", palette=Image.Palette.ADAPTIVE)


FLATTENED = {
    "palette with transparency": lambda c: encode(_palette(c), "PNG", transparency=3),
    "palette": lambda c: encode(_palette(c), "PNG"),
    "rgba": rgba_png,
    "grey with alpha": lambda c: encode(Image.open(io.BytesIO(rgba_png(c))).convert("LA"), "PNG"),
    "every grey and alpha": lambda c: encode(_every_grey_and_alpha(), "PNG"),
    "cmyk tiff": lambda c: encode(c.convert("CMYK"), "TIFF"),
    "1-bit": lambda c: encode(c.convert("1"), "PNG"),
    "greyscale": lambda c: encode(c.convert("L"), "PNG"),
    "16-bit": lambda c: _sixteen_bit(c, "I;16"),
    "32-bit integer": lambda c: _sixteen_bit(c, "I"),
    "float": lambda c: encode(Image.fromarray(np.asarray(c.convert("L"), dtype=np.float32) / 255), "TIFF"),
    "float over 1": lambda c: encode(Image.fromarray(np.asarray(c.convert("L"), dtype=np.float32) * 3), "TIFF"),
}


@pytest.mark.parametrize("kind", FLATTENED)
def test_flattening_in_strips_gives_the_pixels_of_whole_image_conversion(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a photo in a mode that must be flattened, and strips of a few rows (the default covers small photos)
    data = FLATTENED[kind](photo_image("skimage/coffee"))
    monkeypatch.setattr(images, "_STRIP_BYTES", 7 * 600)
    # WHEN it is decoded THEN the crop is bit-identical to converting the whole image at once, as before
    assert np.array_equal(_load(data), _reference_crop(data))


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_a_quarter_turn_beyond_the_budget_turns_the_crop_instead(orientation: int) -> None:
    # GIVEN a turned PNG and a budget that holds the decoded photo but not a turned copy of it as well
    coffee = photo_image("skimage/coffee")
    inverse = ORIENTATION_INVERSE[orientation]
    assert inverse is not None
    data = encode(coffee.transpose(inverse), "PNG", exif=_exif(orientation))
    flattening, turning = images._decode_cost("RGB", Image.open(io.BytesIO(data)).size, "PNG")
    assert flattening < turning
    # WHEN it is decoded within that budget, and with room to spare
    tight = load_image(data, **LIMITS, max_memory=flattening)
    roomy = load_image(data, **LIMITS, max_memory=turning)
    # THEN both are the upright photo's centre: the same up to the resampling passes' rounding
    difference = np.abs(tight.astype(int) - roomy.astype(int))
    assert difference.mean() < 0.5
    assert difference.max() <= 3
    assert np.array_equal(roomy, _load(encode(coffee, "PNG")))


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def test_a_photo_over_the_decode_budget_is_refused_before_decoding() -> None:
    # GIVEN a 4 MP RGBA PNG: 16 MB decoded, 16 MB more flattened on white
    data = encode(Image.new("RGBA", (2000, 2000), (10, 20, 30, 40)), "PNG")
    flattening, _ = images._decode_cost("RGBA", (2000, 2000), "PNG")
    # WHEN the budget is just under its estimate THEN it is refused, quickly, saying how much it needs
    started = time.process_time()
    with pytest.raises(ImageError) as refused:
        load_image(data, **LIMITS, max_memory=flattening - 1)
    assert time.process_time() - started < 0.5  # decoding 4 MP of PNG takes longer: it was refused from the header
    assert refused.value.code is ErrorCode.DECOMPRESSION_BOMB
    assert "MB to decode" in refused.value.message
    # AND at its estimate it decodes
    assert load_image(data, **LIMITS, max_memory=flattening).shape == (MODEL_SIZE, MODEL_SIZE, 3)


def test_decodes_in_threads_share_one_budget_first_come_first_served() -> None:
    memory = images._DecodeMemory()
    entered: list[str] = []
    first_holds, release_first = threading.Event(), threading.Event()

    def first() -> None:
        with memory.hold(300, budget=480):
            entered.append("first")
            first_holds.set()
            release_first.wait(10)

    def later(name: str, nbytes: int) -> None:
        with memory.hold(nbytes, budget=480):
            entered.append(name)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    first_holds.wait(10)
    # GIVEN 300 of 480 held: a decode that needs 300 waits, and a small one that comes after it waits its turn
    threads.append(threading.Thread(target=later, args=("large", 300)))
    threads[1].start()
    time.sleep(0.2)
    threads.append(threading.Thread(target=later, args=("small", 10)))
    threads[2].start()
    time.sleep(0.2)
    assert entered == ["first"]
    # WHEN the first is done THEN the others go, in the order they came
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert entered == ["first", "large", "small"]
