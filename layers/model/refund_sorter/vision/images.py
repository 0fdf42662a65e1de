"""Photo bytes → the model's input: decode, orient, flatten, centre-crop, resize.

Decoding is the expensive part of the whole pipeline, so JPEGs are decoded at the smallest DCT scale that still
covers the crop (``Image.draft``). A ~2 MB 12 MP phone JPEG costs ~170 ms the naive way (full decode, turn,
resize) and ~30 ms at 1/8 scale, nearly all of it Huffman decoding (~10 ms per MB of file, which no DCT scale
avoids); the model needs ~15 ms of CPU per photo in batches (bench/results.md). The EXIF
orientation is read, not applied with ``ImageOps.exif_transpose`` (which copies the image and rewrites its
EXIF): a mirror or half turn is applied to the 224×224 crop, a quarter turn to the draft-sized image.

Memory is bounded by a budget (``Settings.decode_memory_mb``) rather than by pixels alone: a 141 KB 8,000 × 8,000
16-bit PNG is within the pixel limit but 128 MB decoded, and converting it the obvious way (float64 copies) took
1.6 GB. So each photo's peak is estimated from its header (mode, size, codec) before any pixel is decoded, a photo
whose estimate exceeds the budget is refused as a ``decompression_bomb``, and decodes running in threads of one
process hold their estimates from one shared budget. The steps are kept cheap so the estimates stay small: the
photo is flattened to 8-bit greyscale or RGB a strip of rows at a time (no full-size float or RGBA copy), the decoded
original is freed as soon as its flattened copy exists, and greyscale is made RGB only once resized to the crop.
bench/memory.md has the peak per image mode before and after.

Every refusal is an :class:`~refund_sorter.errors.ImageError` with a stable code; Pillow's own exceptions
and warnings never escape.
"""

from __future__ import annotations

import importlib
import io
import itertools
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from refund_sorter.config import Settings
from refund_sorter.errors import ErrorCode, ImageError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

# The original system's formats plus WebP, BMP, TIFF and what phones send (HEIC/HEIF, AVIF), by Pillow's names.
# Pillow only ever tries the decoder that the file's magic bytes name: anything else (PSD, ICO, EPS, …) is
# refused without parsing it, which keeps the attack surface small.
ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
# The same list for people (error messages, the fetcher's refusals).
ACCEPTED_NAMES: Final = "JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC/HEIF or AVIF"
# Each format's Pillow plugin, imported on first use: Image.open(formats=...) would otherwise import all ~40
# plugins the first time a format is missing from its registry. HEIF is pi-heif's plugin (registered below).
_PILLOW_PLUGINS: Final = {
    "JPEG": "PIL.JpegImagePlugin",
    "PNG": "PIL.PngImagePlugin",
    "GIF": "PIL.GifImagePlugin",
    "WEBP": "PIL.WebPImagePlugin",
    "BMP": "PIL.BmpImagePlugin",
    "TIFF": "PIL.TiffImagePlugin",
    "AVIF": "PIL.AvifImagePlugin",
}

MODEL_SIZE: Final = 224
# The centre square's side as a share of the shorter side. The weights were trained on 224/256 (the
# EfficientNet-Lite recipe, which tools/model/reference.py and the golden pixels keep); we show the model 240/256
# because phone photos of clothes are mostly portrait and the garment fills the frame, so 224/256 cut off the
# hem of a dress or the sleeves of a coat. Measured on clothing-small (bench/accuracy.md, "Preprocessing"): a
# custom head +1.2 points top-1 in 5-fold CV on train/ (p < 0.01) and +1.8 on validation/; the ImageNet taxonomy
# (no head) -0.6 points on all 3,409 photos; decoding costs the same. The whole shorter side (256/256) helped the
# head less and cost the taxonomy 1.4 points; squashing or padding the whole frame cost it 5 to 7.
CROP_FRACTION: Final = 240 / 256
# Normalisation that matches these weights: (x - 127) / 128, not torchvision's mean/std.
PIXEL_MEAN: Final = 127.0
PIXEL_SCALE: Final = 128.0
# Draft target for a 224-pixel model: the DCT scale is chosen so both sides stay >= this, i.e. the crop (240/256
# of it) still has >= 224 pixels. A model with a larger input (Lite1: 240, Lite2: 260) scales it alike.
DRAFT_SIZE: Final = 256
WHITE: Final = (255, 255, 255)
# The reviewer's thumbnail: quality 80 keeps a ~500×375 photo at a few tens of KB with no visible blocking.
THUMBNAIL_QUALITY: Final = 80
# EXIF orientation → the transpose that shows the photo upright (the table ImageOps.exif_transpose uses).
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES: Final = frozenset(
    {Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90}
)

MIB: Final = 1024 * 1024
# The decode budget when a caller names none: the setting's default.
DEFAULT_DECODE_MEMORY: Final = int(Settings.model_fields["decode_memory_mb"].default) * MIB
# Bytes a pixel takes in Pillow's memory; every mode not named takes 4 (Pillow keeps RGB in 4 bytes, like RGBA).
_PIXEL_BYTES: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Modes flattened to 8-bit greyscale (made RGB only once resized to the crop); every other mode is flattened to RGB.
_GREY_MODES: Final = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# The codec's own buffers while it decodes, in bytes a pixel on top of the image Pillow keeps: libheif's and libavif's
# YUV planes and RGB copy, libwebp's two canvases and the bytes Pillow copies out of them. Measured by `make memory`
# (bench/memory.md: HEIF ~3.0, ~3.5 at 10 bits a channel; AVIF ~5.2; WebP ~12.3) and rounded up.
_CODEC_BYTES: Final = {"HEIF": 4.0, "AVIF": 5.5, "WEBP": 13.0}
# Rows flattened at a time: a few MB of float64 or RGBA whatever the width.
_STRIP_BYTES: Final = 4 * MIB
# What a decode allocates besides its full-size images: strips, the thumbnail's reduced copy, the resampling's
# intermediate rows (~15 MB measured at 64 MP), with room to spare.
_DECODE_SLACK: Final = 32 * MIB

_MAGIC: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
# HEIF and AVIF are ISO media files: an "ftyp" box at byte 4 whose brands name the codec. "mif1"/"msf1" only say
# "HEIF container", so the compatible brands that follow decide (an AVIF lists "avif", an iPhone HEIC "heic").
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_HEVC_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1"})
# Images we recognise but do not take: named so the refusal can say so rather than "not an image".
_UNSUPPORTED_MAGIC: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"%PDF", 0, "PDF"),
)

# Pillow warns (EXIF quirks, palette transparency, large images) instead of failing; we check what matters
# ourselves (pixel limit below) so the warnings would only be noise in Lambda logs.
warnings.filterwarnings("ignore", module=r"(PIL|pi_heif)(\.|$)")
# Our own pixel limit (a setting) is checked from the header before any pixels are allocated; Pillow's
# global limit stays as a backstop for decoders that grow the image while loading.


def sniff_format(head: bytes) -> str | None:
    """The accepted format (Pillow's name) named by the file's magic bytes, or ``None``.

    Used by the URL fetcher to refuse a non-image before downloading all of it, and here to pick the one
    decoder to try and to tell "unsupported image format" from "not an image at all". HEIF and AVIF are
    told apart by the brands of the ``ftyp`` box: pass its first 64 bytes or so (16 name the major brand only,
    which is enough for phones' files).
    """
    for magic, offset, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (fmt != "WEBP" or head[:4] == b"RIFF"):
            return fmt
    return _sniff_iso_media(head)


def _sniff_iso_media(head: bytes) -> str | None:
    if head[4:8] != b"ftyp":
        return None
    box_end = min(int.from_bytes(head[:4], "big"), len(head))
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, box_end - 3, 4)}  # after the major brand and minor version
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and compatible & _AVIF_BRANDS):
        return "AVIF"
    if major in _HEVC_BRANDS or major in _HEIF_BRANDS:
        return "HEIF"
    return None


def _unsupported_format(head: bytes) -> str | None:
    for magic, offset, name in _UNSUPPORTED_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    stripped = head.lstrip()[:256].lower()
    if stripped.startswith((b"<svg", b"<?xml")) and b"<svg" in stripped:
        return "SVG"
    return None


@dataclass(frozen=True)
class DecodedPhoto:
    """A photo decoded once: the model's crop and, when asked for, the small upright JPEG a reviewer looks at."""

    crop: np.ndarray  # uint8[S, S, 3] RGB, S the model's input size (224 for Lite0)
    thumbnail: bytes | None = None


def load_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    max_memory: int = DEFAULT_DECODE_MEMORY,
    size: int = MODEL_SIZE,
    crop_fraction: float = CROP_FRACTION,
) -> np.ndarray:
    """Decode a photo into the model's crop: ``uint8[size, size, 3]`` RGB (:func:`decode_photo` without thumbnail)."""
    return decode_photo(
        data, max_bytes=max_bytes, max_pixels=max_pixels, max_memory=max_memory, size=size, crop_fraction=crop_fraction
    ).crop


def decode_photo(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    thumbnail_side: int = 0,
    max_memory: int = DEFAULT_DECODE_MEMORY,
    size: int = MODEL_SIZE,
    crop_fraction: float = CROP_FRACTION,
) -> DecodedPhoto:
    """Decode a photo into the model's crop and, if ``thumbnail_side`` > 0, a JPEG thumbnail of it.

    Parameters
    ----------
    data
        The file's bytes, any accepted format.
    max_bytes, max_pixels
        Limits (from :class:`~refund_sorter.config.Settings`); larger inputs are refused before decoding.
    max_memory
        The process's decoding budget in bytes (``Settings.decode_memory_mb``): a photo whose estimated peak is
        larger is refused before decoding; otherwise the decode waits until its estimate fits beside the decodes
        other threads are running.
    thumbnail_side
        Longest side of the thumbnail; 0 for none. It is made from the pixels already decoded for the model
        (see :func:`_thumbnail`), never by decoding the photo again.
    size, crop_fraction
        The model's input side in pixels (its ``model.json``) and the centre square's side as a share of the
        photo's shorter side (the framing).

    Raises
    ------
    ImageError
        ``empty_file``, ``file_too_large``, ``not_an_image``, ``unsupported_format``,
        ``decompression_bomb`` or ``corrupt_image``.
    """
    if not data:
        raise ImageError(ErrorCode.EMPTY_FILE, "the file is empty")
    if len(data) > max_bytes:
        raise ImageError(ErrorCode.FILE_TOO_LARGE, f"the file is {len(data):,} bytes; the limit is {max_bytes:,}")
    fmt = sniff_format(data[:64])
    if fmt is None:
        unsupported = _unsupported_format(data[:512])
        if unsupported:
            raise ImageError(
                ErrorCode.UNSUPPORTED_FORMAT, f"{unsupported} images are not supported; send {ACCEPTED_NAMES}"
            )
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"the file is not an image ({ACCEPTED_NAMES})")
    register_decoder(fmt)  # outside the try: a decoder missing from the layer is our fault, never "corrupt_image"
    try:
        with Image.open(io.BytesIO(data), formats=(fmt,)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    ErrorCode.DECOMPRESSION_BOMB,
                    f"the image is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
                )
            if image.format in ("JPEG", "MPO"):  # MPO: a camera's multi-picture JPEG, read as its first picture
                draft = -(-DRAFT_SIZE * size // MODEL_SIZE)  # ceil: 256 for a 224-pixel model, 298 for 260 pixels
                image.draft("RGB", (draft, draft))  # before the estimate: the size it will decode at
            flattening, turning = _decode_cost(image.mode, image.size, fmt)
            if flattening > max_memory:
                raise ImageError(
                    ErrorCode.DECOMPRESSION_BOMB,
                    f"the image ({width}×{height}, {image.mode}) needs ~{flattening // MIB:,} MB to decode; "
                    f"the limit is {max_memory // MIB:,} MB",
                )
            # Reserve for a quarter turn too when the budget allows (whether one is needed is known only once
            # decoded, for a PNG); a turn that does not fit is applied to the resized crop instead.
            reserve = max(flattening, turning) if turning <= max_memory else flattening
            with _DECODE_MEMORY.hold(reserve, max_memory):
                return _crop_for_model(image, fmt, thumbnail_side, reserve, size=size, crop_fraction=crop_fraction)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        # The magic bytes named a format we take, so the file is a damaged one rather than something else.
        raise ImageError(ErrorCode.CORRUPT_IMAGE, f"the file starts like a {fmt} but cannot be decoded") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(ErrorCode.DECOMPRESSION_BOMB, f"the image is too large to decode safely: {exc}") from exc
    except MemoryError as exc:
        raise ImageError(ErrorCode.DECOMPRESSION_BOMB, "the image needs too much memory to decode") from exc
    except Exception as exc:
        raise ImageError(ErrorCode.CORRUPT_IMAGE, f"the image is damaged or truncated ({exc})") from exc


@cache
def register_decoder(fmt: str) -> None:
    """Make Pillow's registry hold the decoder of ``fmt`` (one of :data:`ACCEPTED_FORMATS`), once per process.

    HEIF is pi-heif's plugin, asked for the primary image only (no thumbnails, depth or auxiliary images).
    """
    if fmt == "HEIF":
        from pi_heif import register_heif_opener

        register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    else:
        importlib.import_module(_PILLOW_PLUGINS[fmt])


def register_decoders() -> None:
    """Load every accepted format's decoder now (e.g. before a Lambda SnapStart snapshot) rather than on first use."""
    for fmt in ACCEPTED_FORMATS:
        register_decoder(fmt)


class _DecodeMemory:
    """The memory a process's decodes hold at once: each holds its estimate from one budget, first come first
    served, so a worker's decode threads together stay within it (a phone JPEG holds a few MB: no waiting)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held = 0
        self._tickets = itertools.count()
        self._serving = 0

    @contextmanager
    def hold(self, nbytes: int, budget: int) -> Iterator[None]:
        with self._changed:
            ticket = next(self._tickets)
            # In ticket order, so a large photo is not overtaken for ever by small ones.
            self._changed.wait_for(lambda: ticket == self._serving and self._held + nbytes <= max(budget, nbytes))
            self._serving += 1
            self._held += nbytes
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._held -= nbytes
                self._changed.notify_all()


_DECODE_MEMORY: Final = _DecodeMemory()


def _decode_cost(mode: str, size: tuple[int, int], fmt: str) -> tuple[int, int]:
    """Upper bounds, in bytes, of the peak memory of decoding and flattening an image (the codec's buffers and
    Pillow's image; then the image and its flattened copy), and of turning the flattened image a quarter."""
    pixels = size[0] * size[1]
    stored = _PIXEL_BYTES.get(mode, 4) * pixels
    flat = (1 if mode in _GREY_MODES else 4) * pixels
    decoding = stored + int(_CODEC_BYTES.get(fmt, 0) * pixels)
    flattening = stored + (0 if mode in ("L", "RGB") else flat)
    return max(decoding, flattening) + _DECODE_SLACK, 2 * flat + _DECODE_SLACK


def _crop_for_model(
    image: Image.Image, fmt: str, thumbnail_side: int, reserved: int, *, size: int, crop_fraction: float
) -> DecodedPhoto:
    # No seek: a freshly opened file is at an animation's first frame, and a HEIF file at its primary image
    # (which need not be the first one).
    image.load()
    if _decode_cost(image.mode, image.size, fmt)[0] > reserved:  # a codec that changed its mind while loading
        raise ImageError(ErrorCode.DECOMPRESSION_BOMB, f"the decoded image ({image.mode}) needs too much memory")
    # getexif() also reads the orientation of PNG/WebP/TIFF and XMP, as ImageOps.exif_transpose does.
    upright = _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation, 1))
    flat = _flatten(image)
    if flat is not image:
        image.close()  # frees the decoded pixels now rather than when the caller's `with` ends
    if upright in _SWAPS_AXES and _decode_cost(flat.mode, flat.size, fmt)[1] <= reserved:
        # A quarter turn swaps Pillow's two resampling passes (and their rounding), so turn first, as before,
        # when the turned copy fits the budget; otherwise the crop is turned (a rounding apart).
        turned = flat.transpose(upright)
        flat.close()
        flat, upright = turned, None
    box = _centre_square(flat.size, upright, crop_fraction)
    crop = flat.resize((size, size), Image.Resampling.BICUBIC, box=box)
    # A mirror or a half turn commutes with the resampling: apply it to the model's crop, not the decoded image.
    # Greyscale is resized as such and made RGB here: the same pixels as resizing its RGB copy, a quarter of it.
    crop = crop if upright is None else crop.transpose(upright)
    pixels = np.asarray(crop.convert("RGB"), dtype=np.uint8)
    return DecodedPhoto(pixels, _thumbnail(flat, upright, thumbnail_side) if thumbnail_side > 0 else None)


def _thumbnail(flat: Image.Image, upright: Image.Transpose | None, side: int) -> bytes:
    """A JPEG of the decoded pixels, upright, at most ``side`` pixels long. A JPEG is decoded at its draft scale
    (a 12 MP photo is ~500×375 by now), which is already thumbnail-sized: this costs an encode, and a small
    resize for other formats and small JPEGs, never a second decode of the original."""
    width, height = flat.size
    if max(width, height) > side:
        scale = side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        flat = flat.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if upright is not None:
        flat = flat.transpose(upright)
    buffer = io.BytesIO()
    flat.convert("RGB").save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def _centre_square(
    size: tuple[int, int], upright: Image.Transpose | None, crop_fraction: float = CROP_FRACTION
) -> tuple[int, int, int, int]:
    """The model's centre square of the upright photo (offsets rounded as there) as a box in the stored pixels,
    which ``upright`` turns or mirrors into the upright photo."""
    width, height = size
    wide, high = (height, width) if upright in _SWAPS_AXES else (width, height)  # the upright photo's size
    side = round(min(width, height) * crop_fraction)
    left, top = (wide - side) // 2, (high - side) // 2
    right, bottom = left + side, top + side
    boxes = {  # the upright box, taken back through each transpose
        None: (left, top, right, bottom),
        Image.Transpose.FLIP_LEFT_RIGHT: (width - right, top, width - left, bottom),
        Image.Transpose.FLIP_TOP_BOTTOM: (left, height - bottom, right, height - top),
        Image.Transpose.ROTATE_180: (width - right, height - bottom, width - left, height - top),
        Image.Transpose.TRANSPOSE: (top, left, bottom, right),
        Image.Transpose.ROTATE_90: (width - bottom, left, width - top, right),
        Image.Transpose.ROTATE_270: (top, height - right, bottom, height - left),
        Image.Transpose.TRANSVERSE: (width - bottom, height - right, width - top, height - left),
    }
    return boxes[upright]


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any mode to 8-bit RGB: transparency on white, 16-bit scaled, CMYK and palettes converted."""
    flat = _flatten(image)
    return flat if flat.mode == "RGB" else flat.convert("RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """Any mode → 8-bit greyscale or RGB (the image itself if it is one): transparency on white, 16-bit and
    float scaled, CMYK and palettes converted. Each step needs one flattened copy and a strip, no more."""
    mode = image.mode
    if mode == "LAB":
        # Pillow converts CIELab through LittleCMS, which the Lambda layer leaves out (phones never write Lab).
        raise ImageError(ErrorCode.UNSUPPORTED_FORMAT, f"CIELab images are not supported; send {ACCEPTED_NAMES} in RGB")
    if mode in ("L", "RGB"):
        return image
    target = "L" if mode in _GREY_MODES else "RGB"
    if mode.startswith("I") or mode == "F":
        return _to_8bit(image)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _on_white(image, target)
    return image.convert(target)  # 1, P, CMYK, YCbCr, RGBX: pixel by pixel, straight into the copy


def _strips(size: tuple[int, int], bytes_per_pixel: int) -> Iterator[tuple[int, int, int, int]]:
    width, height = size
    rows = max(1, _STRIP_BYTES // (bytes_per_pixel * width))
    for top in range(0, height, rows):
        yield 0, top, width, min(height, top + rows)


def _on_white(image: Image.Image, target: str) -> Image.Image:
    """Transparency composited on white, a strip of rows at a time (a full-size RGBA copy and alpha channel would
    cost as much again as the photo): per pixel, exactly what pasting the whole RGBA image did."""
    flat = Image.new(target, image.size, WHITE if target == "RGB" else WHITE[0])
    for box in _strips(image.size, 4):
        strip = image.crop(box)
        if strip.mode != "RGBA":
            strip = strip.convert("RGBA")
        flat.paste(strip, box, mask=strip.getchannel("A"))
    return flat


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale → 8-bit, a strip of rows at a time (the whole image in float64 is 8 bytes a
    pixel, and the arithmetic copies it twice). Pillow's own convert clips at 255 instead of scaling."""
    boxes = list(_strips(image.size, 8))
    # Pillow's getextrema() refuses big-endian 16-bit; NaN propagates as in np.max of the whole image.
    peak = float(np.max([np.asarray(image.crop(box)).max() for box in boxes])) if boxes else 0.0
    full_scale = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0 if peak <= 255 else 65535.0
    flat = Image.new("L", image.size)
    for box in boxes:
        pixels = np.asarray(image.crop(box), dtype=np.float64)
        flat.paste(Image.fromarray(np.clip(pixels * (255.0 / full_scale), 0, 255).astype(np.uint8)), box)
    return flat


def to_model_input(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Stack ``uint8[S, S, 3]`` crops into the model's ``float32[N, 3, S, S]`` input.

    Each crop is written once, straight into its channel-first slot (the cast, the layout change and the
    subtraction in one pass), then the batch is scaled in place: no uint8 stack, no transposed copy.
    """
    if not crops:
        raise ValueError("to_model_input needs at least one crop")
    side = crops[0].shape[0]
    batch = np.empty((len(crops), 3, side, side), dtype=np.float32)
    for slot, crop in zip(batch, crops, strict=True):
        np.subtract(crop.transpose(2, 0, 1), np.float32(PIXEL_MEAN), out=slot, dtype=np.float32)
    batch *= np.float32(1 / PIXEL_SCALE)  # 1/128 is a power of two: the same bits as dividing
    return batch
