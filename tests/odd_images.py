"""A corpus of odd and hostile photos, generated with Pillow, with what each must give.

HEIC is the exception: nothing we depend on can write it, so it comes from a fixture file
(tests/fixtures/formats/, made once; its make_fixtures.py says how).

Used by the loader's unit tests and, through the CLI, the API and the batch, by the end-to-end tests: every
case must come out as a Result (``expect="ok"``) or as a ``failed`` Result with the given error code.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from refund_sorter_cli.samples import encode, photo_image

if TYPE_CHECKING:
    from collections.abc import Callable

FORMAT_FIXTURES = Path(__file__).parent / "fixtures" / "formats"


@dataclass(frozen=True)
class OddImage:
    name: str
    filename: str
    data: bytes
    expect: str  # "ok" or the ErrorCode value


# What Image.transpose must do to upright pixels so that a viewer honouring EXIF orientation N shows them
# upright again (the inverse of what ImageOps.exif_transpose applies).
ORIENTATION_INVERSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def with_orientation(image: Image.Image, orientation: int, quality: int = 92) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF tag that turns them back."""
    inverse = ORIENTATION_INVERSE[orientation]
    stored = image.transpose(inverse) if inverse is not None else image
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes())


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes that claim 10 gigapixels: the header says so, the data is a compressed trickle."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def gif_huge_dimensions() -> bytes:
    """A valid small GIF whose logical screen claims 65535×65535."""
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def animated_gif(base: Image.Image) -> bytes:
    frames = [base.convert("P", palette=Image.Palette.ADAPTIVE)] + [
        Image.new("P", base.size, i * 40) for i in range(1, 4)
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def palette_with_transparency(base: Image.Image) -> bytes:
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(palette, "PNG", transparency=0)


def sixteen_bit_png(base: Image.Image) -> bytes:
    grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return encode(Image.fromarray(grey), "PNG")  # uint16 → mode I;16


def cmyk_jpeg(base: Image.Image) -> bytes:
    return encode(base.convert("CMYK"), "JPEG", quality=90)


def rgba_png(base: Image.Image) -> bytes:
    rgba = base.convert("RGBA")
    alpha = Image.linear_gradient("L").resize(base.size)
    rgba.putalpha(alpha)
    return encode(rgba, "PNG")


@cache
def odd_images() -> tuple[OddImage, ...]:
    coffee = photo_image("skimage/coffee")  # 600×400, top-1 'espresso'
    jpeg = encode(coffee, "JPEG", quality=90)
    avif = encode(coffee, "AVIF", quality=60, speed=10)  # speed 10: the encoder's fastest (the default takes ~1 s)
    cases = [
        OddImage("jpeg", "coffee.jpg", jpeg, "ok"),
        OddImage("upper-case extension", "COFFEE.JPG", jpeg, "ok"),
        OddImage("jpeg extension", "coffee.jpeg", jpeg, "ok"),
        OddImage("progressive jpeg", "progressive.jpg", encode(coffee, "JPEG", progressive=True), "ok"),
        OddImage("png", "coffee.png", encode(coffee, "PNG"), "ok"),
        OddImage("png named .jpg", "wrong-extension.jpg", encode(coffee, "PNG"), "ok"),
        OddImage("gif", "coffee.gif", encode(coffee, "GIF"), "ok"),
        OddImage("animated gif", "animated.gif", animated_gif(coffee), "ok"),
        OddImage("webp", "coffee.webp", encode(coffee, "WEBP"), "ok"),
        OddImage("bmp", "coffee.bmp", encode(coffee, "BMP"), "ok"),
        OddImage("tiff", "coffee.tiff", encode(coffee, "TIFF"), "ok"),
        OddImage(
            "heic (iPhone-style, turned by irot)",
            "IMG_0001.HEIC",
            (FORMAT_FIXTURES / "coffee-irot.heic").read_bytes(),
            "ok",
        ),
        OddImage("avif", "coffee.avif", avif, "ok"),
        OddImage("cmyk jpeg", "cmyk.jpg", cmyk_jpeg(coffee), "ok"),
        OddImage("16-bit png", "sixteen.png", sixteen_bit_png(coffee), "ok"),
        OddImage("palette with transparency", "palette.png", palette_with_transparency(coffee), "ok"),
        OddImage("rgba png", "alpha.png", rgba_png(coffee), "ok"),
        OddImage("greyscale jpeg", "grey.jpg", encode(coffee.convert("L"), "JPEG"), "ok"),
        OddImage("1-bit bmp", "mono.bmp", encode(coffee.convert("1"), "BMP"), "ok"),
        OddImage("1x1 pixel", "tiny.png", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "ok"),
        OddImage("extreme aspect ratio", "strip.png", encode(coffee.resize((4000, 6)), "PNG"), "ok"),
        OddImage("polyglot jpeg+html", "polyglot.jpg", jpeg + b"<html><script>alert(1)</script></html>", "ok"),
        *(OddImage(f"exif orientation {o}", f"orient{o}.jpg", with_orientation(coffee, o), "ok") for o in range(1, 9)),
        OddImage("zero bytes", "empty.jpg", b"", "empty_file"),
        OddImage("html named .jpg", "page.jpg", b"<!doctype html><html><body>hello</body></html>", "not_an_image"),
        OddImage(
            "random bytes",
            "noise.png",
            bytes(np.random.default_rng(7).integers(0, 256, 4096, np.uint8)),
            "not_an_image",
        ),
        OddImage("truncated jpeg", "truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt_image"),
        OddImage("truncated png", "truncated.png", encode(coffee, "PNG")[:5000], "corrupt_image"),
        OddImage("jpeg header only", "header.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64, "corrupt_image"),
        OddImage("decompression bomb png", "bomb.png", png_bomb(), "decompression_bomb"),
        OddImage("huge-dimension gif", "huge.gif", gif_huge_dimensions(), "decompression_bomb"),
        OddImage(
            "svg", "vector.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"
        ),
        OddImage("photoshop", "layers.psd", b"8BPS\x00\x01" + b"\x00" * 64, "unsupported_format"),
        OddImage(
            "heic header only",
            "iphone.heic",
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + b"\x00" * 64,
            "corrupt_image",
        ),
        OddImage("truncated avif", "truncated.avif", avif[:300], "corrupt_image"),
        OddImage("jpeg xl", "photo.jxl", b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\x00" * 64, "unsupported_format"),
        OddImage("cielab tiff", "lab.tiff", encode(coffee.convert("LAB"), "TIFF"), "unsupported_format"),
        OddImage("jpeg 2000", "photo.jp2", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 64, "unsupported_format"),
    ]
    return tuple(cases)


# Photos that are small files but many bytes a pixel once decoded: every mode Pillow opens for the formats we
# take, each at a size the pixel limit lets through. Built on demand (a few seconds each at 64 MP); used by the
# decode-under-a-memory-cap test and by `make memory` (tools/memory_check.py).
def _png(width: int, height: int, bit_depth: int, colour_type: int, pixel: bytes) -> bytes:
    """A PNG of one repeated pixel, written row by row (Pillow cannot write 16-bit colour PNGs)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    row = b"\x00" + pixel * width
    squeeze = zlib.compressobj(9)
    rows = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _tiff(image: Image.Image, **params: object) -> bytes:
    return encode(image, "TIFF", compression="tiff_adobe_deflate", **params)


def _tiff_array(pixels: np.ndarray) -> bytes:
    import tifffile  # scikit-image's dependency (dev): Pillow writes no 16-bit colour or big-endian TIFF

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, compression="zlib", byteorder=">" if pixels.dtype.byteorder == ">" else "<")
    return buffer.getvalue()


def _big_palette(size: tuple[int, int]) -> Image.Image:
    image = Image.new("P", size, 200)
    image.putpalette(bytes(range(256)) * 3)  # all 256 entries used by the palette
    return image


def _frames(first: Image.Image, fmt: str, count: int = 3, **params: object) -> bytes:
    frames = [first.point(lambda v, i=i: (v + 40 * i) % 256) for i in range(1, count)]
    return encode(first, fmt, save_all=True, append_images=frames, **params)


def _turned(image: Image.Image, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn: the decoded pixels are turned, not just the crop
    return encode(image, fmt, exif=exif.tobytes())


# name → (the mode Pillow opens it as, how to make it at width × height)
PIXEL_HEAVY: dict[str, tuple[str, Callable[[int, int], bytes]]] = {
    "RGB jpeg (phone)": ("RGB", lambda w, h: encode(Image.new("RGB", (w, h), (120, 90, 60)), "JPEG", quality=90)),
    "CMYK jpeg": ("CMYK", lambda w, h: encode(Image.new("CMYK", (w, h), (10, 60, 90, 5)), "JPEG")),
    "RGB png": ("RGB", lambda w, h: encode(Image.new("RGB", (w, h), (120, 90, 60)), "PNG")),
    "RGB png, quarter turn": ("RGB", lambda w, h: _turned(Image.new("RGB", (w, h), (120, 90, 60)))),
    "RGB 16-bit tiff": ("RGB", lambda w, h: _tiff_array(np.full((h, w, 3), 30000, np.uint16))),
    "RGBA png": ("RGBA", lambda w, h: encode(Image.new("RGBA", (w, h), (120, 90, 60, 128)), "PNG")),
    "RGBA 16-bit png": ("RGBA", lambda w, h: _png(w, h, 16, 6, struct.pack(">4H", 30000, 20000, 10000, 40000))),
    "RGB webp": ("RGB", lambda w, h: encode(Image.new("RGB", (w, h), (120, 90, 60)), "WEBP", lossless=True)),
    "RGB avif": ("RGB", lambda w, h: encode(Image.new("RGB", (w, h), (120, 90, 60)), "AVIF", quality=60, speed=10)),
    "RGBA webp": ("RGBA", lambda w, h: encode(Image.new("RGBA", (w, h), (120, 90, 60, 128)), "WEBP", lossless=True)),
    "CMYK tiff": ("CMYK", lambda w, h: _tiff(Image.new("CMYK", (w, h), (10, 60, 90, 5)))),
    "L png": ("L", lambda w, h: encode(Image.new("L", (w, h), 100), "PNG")),
    "1 png": ("1", lambda w, h: encode(Image.new("1", (w, h), 1), "PNG")),
    "LA png": ("LA", lambda w, h: encode(Image.new("LA", (w, h), (100, 128)), "PNG")),
    "LA 16-bit png": ("RGBA", lambda w, h: _png(w, h, 16, 4, struct.pack(">2H", 30000, 40000))),
    "P png (256 colours)": ("P", lambda w, h: encode(_big_palette((w, h)), "PNG")),
    "P png (256 colours, transparency)": ("P", lambda w, h: encode(_big_palette((w, h)), "PNG", transparency=0)),
    "I;16 png": ("I;16", lambda w, h: encode(Image.new("I;16", (w, h), 1000), "PNG")),
    "I;16B tiff": ("I;16B", lambda w, h: _tiff_array(np.full((h, w), 1000, ">u2"))),
    "I tiff": ("I", lambda w, h: _tiff(Image.new("I", (w, h), 70_000))),
    "F tiff": ("F", lambda w, h: _tiff(Image.new("F", (w, h), 0.5))),
    "animated gif": ("P", lambda w, h: _frames(_big_palette((w, h)), "GIF")),
    "apng": ("RGBA", lambda w, h: _frames(Image.new("RGBA", (w, h), (120, 90, 60, 128)), "PNG")),
    "multi-page tiff": (
        "RGB",
        lambda w, h: _frames(Image.new("RGB", (w, h), (120, 90, 60)), "TIFF", compression="tiff_adobe_deflate"),
    ),
}


# An iPhone's 48 MP "HEIF Max" photo (8064×6048, one colour; nothing we depend on can write HEIC), and one in
# 10 bits a channel (an HDR phone's).
HEIC_48MP = FORMAT_FIXTURES / "plain-48mp.heic"
HEIC_48MP_10BIT = FORMAT_FIXTURES / "plain-48mp-10bit.heic"


def pixel_heavy(name: str, width: int = 8000, height: int = 8000) -> bytes:
    """The :data:`PIXEL_HEAVY` photo ``name`` at ``width`` × ``height`` (by default the 64 MP pixel limit)."""
    return PIXEL_HEAVY[name][1](width, height)
