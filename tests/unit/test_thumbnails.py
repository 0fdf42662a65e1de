"""The reviewer's thumbnail: made from the decode the model already did, small, upright, a JPEG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from refund_sorter.config import Settings
from refund_sorter.photos import Photo
from refund_sorter.vision import images
from refund_sorter.vision.images import decode_photo, load_image
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.samples import photo_bytes

LIMITS = {"max_bytes": 50_000_000, "max_pixels": 64_000_000}


def phone_jpeg(width: int = 4000, height: int = 3000, orientation: int | None = None) -> bytes:
    """A phone-sized JPEG of a real photo (scaled up), optionally with an EXIF orientation."""
    photo = Image.open(io.BytesIO(photo_bytes("skimage/coffee"))).convert("RGB").resize((width, height))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    photo.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_a_12_mp_photo_gives_a_small_jpeg_from_its_draft_decode() -> None:
    decoded = decode_photo(phone_jpeg(), thumbnail_side=512, **LIMITS)
    assert decoded.thumbnail is not None
    thumbnail = opened(decoded.thumbnail)
    assert thumbnail.format == "JPEG"
    # the 1/8 draft scale of 4000×3000: the thumbnail is the decoded image itself, not a second decode
    assert thumbnail.size == (500, 375)
    assert 5_000 < len(decoded.thumbnail) < 80_000


def test_the_photo_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    data = phone_jpeg(2000, 1500)
    opens: list[int] = []
    real_open = Image.open

    def counting_open(*args: object, **kwargs: object) -> Image.Image:
        opens.append(1)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(images.Image, "open", counting_open)
    decode_photo(data, thumbnail_side=512, **LIMITS)
    assert len(opens) == 1


def test_the_crop_is_the_same_with_or_without_a_thumbnail() -> None:
    data = phone_jpeg(3000, 2000, orientation=3)
    decoded = decode_photo(data, thumbnail_side=512, **LIMITS)
    assert np.array_equal(decoded.crop, load_image(data, **LIMITS))
    assert decode_photo(data, **LIMITS).thumbnail is None


# How a camera stores an upright picture for each EXIF orientation (the inverse of what shows it upright).
STORED_AS = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_the_thumbnail_is_upright(orientation: int) -> None:
    # GIVEN a landscape picture whose top-left quarter is red, stored turned as its EXIF orientation says
    upright = Image.new("RGB", (960, 640), (30, 30, 200))
    upright.paste((220, 20, 20), (0, 0, 480, 320))
    turn = STORED_AS[orientation]
    stored = upright if turn is None else upright.transpose(turn)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(buffer, "PNG", exif=exif)
    # WHEN its thumbnail is made
    decoded = decode_photo(buffer.getvalue(), thumbnail_side=480, **LIMITS)
    assert decoded.thumbnail is not None
    thumbnail = opened(decoded.thumbnail).convert("RGB")
    # THEN it shows the picture as it was taken: landscape, red at the top left
    assert thumbnail.size == (480, 320)
    red, _, blue = thumbnail.getpixel((10, 10))  # type: ignore[misc]
    assert red > 150 and blue < 100


def test_a_small_photo_is_kept_at_its_size_and_a_larger_one_shrunk() -> None:
    small = decode_photo(photo_bytes("skimage/chelsea"), thumbnail_side=512, **LIMITS)  # 451×300
    larger = decode_photo(photo_bytes("skimage/coffee"), thumbnail_side=512, **LIMITS)  # 600×400
    assert small.thumbnail is not None and larger.thumbnail is not None
    assert opened(small.thumbnail).size == (451, 300)
    assert opened(larger.thumbnail).size == (512, 341)


def test_the_sorter_carries_thumbnails_only_when_asked(sorter: Sorter) -> None:
    photo = Photo(id="p1", source="coffee.png", read=lambda: photo_bytes("skimage/coffee"))
    (plain,) = sorter.classify([photo])
    (kept,) = sorter.classify([photo], thumbnails=True)
    assert plain.thumbnail is None
    assert kept.thumbnail is not None and opened(kept.thumbnail).format == "JPEG"
    assert kept.result is not None and plain.result is not None
    assert kept.result.top_departments == plain.result.top_departments, "the same decode feeds the model"
    result, _, thumbnail = sorter.sort_one(photo)
    assert result.label == "espresso" and thumbnail is not None


def test_thumbnails_can_be_turned_off() -> None:
    assert Settings(thumbnail_side=0).thumbnail_side == 0
