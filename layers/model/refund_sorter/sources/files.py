"""Where photos come from: local files, URLs, raw bytes (and S3 objects, in :mod:`refund_sorter.storage`).

Each function returns a :class:`~refund_sorter.pipeline.Photo` whose ``read`` does the I/O later, on the
pipeline's worker threads, so fetching overlaps with decoding and inference.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from refund_sorter.errors import ErrorCode, ImageError, NotFoundError
from refund_sorter.photos import Photo
from refund_sorter.results import stable_id

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.config import Settings


def is_url(text: str) -> bool:
    return "://" in text or text.lower().startswith(("http:", "https:"))


def photo_from_path(path: Path, settings: Settings) -> Photo:
    resolved = path.expanduser().resolve()

    def read() -> bytes:
        try:
            size = resolved.stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"no such file: {path}") from exc
        if size > settings.max_image_bytes:
            # Checked before reading so a huge file never lands in memory.
            raise ImageError(
                ErrorCode.FILE_TOO_LARGE, f"the file is {size:,} bytes; the limit is {settings.max_image_bytes:,}"
            )
        try:
            return resolved.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"cannot read {path}: {exc.strerror}") from exc

    return Photo(id=stable_id("file", str(resolved)), source=str(resolved), read=read)


def photo_from_url(url: str, settings: Settings, photo_id: str | None = None) -> Photo:
    def read() -> bytes:
        from refund_sorter.sources.fetch import fetch_image  # urllib3 and DNS code only where URLs are used

        return fetch_image(url, settings).data

    return Photo(id=photo_id or stable_id("url", url), source=url, read=read)


def photo_from_bytes(data: bytes, source: str, photo_id: str | None = None) -> Photo:
    return Photo(id=photo_id or stable_id("bytes", hashlib.sha256(data).hexdigest()), source=source, read=lambda: data)
