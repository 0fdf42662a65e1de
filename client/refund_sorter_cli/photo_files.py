"""Which files in a folder are photos: what ``upload DIR`` sends and ``classify DIR`` classifies.

A file is a photo when its name says so (a photo extension) and its first bytes agree (the magic numbers
the runtime's decoder accepts): a ``notes.txt`` or a ``.jpg`` that is really an HTML page is left out with
a note saying why, rather than uploaded and failed the next night. A ``.jpg`` that starts like a JPEG but
is cut off still counts: deciding that it cannot be decoded is the classifier's job, and its ``failed``
Result says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from refund_sorter.vision.images import ACCEPTED_FORMATS, sniff_format

if TYPE_CHECKING:
    from pathlib import Path

# The extensions phones, cameras and scanners give the formats the decoder reads (HEIC/AVIF included, so
# they are sniffed rather than skipped by name once the decoder reads them).
PHOTO_EXTENSIONS: Final = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff"}
    | {".heic", ".heif", ".hif", ".avif"}
)
_HEAD_BYTES: Final = 32  # enough for every magic number sniff_format knows


class FolderError(Exception):
    """The folder a command was given does not exist or is not a folder."""


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class PhotoFolder:
    """A folder's photos (sorted by their path inside it) and the files left out, each with its reason."""

    root: Path
    photos: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def find_photos(folder: Path) -> PhotoFolder:
    """The photos under ``folder``, recursively, in a stable order; hidden files and folders are ignored.

    Raises
    ------
    FolderError
        The folder does not exist or is a file.
    """
    if not folder.exists():
        raise FolderError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise FolderError(f"not a folder: {folder}")
    found = PhotoFolder(folder)
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue  # .DS_Store, .git/, editor swap files: never anyone's photo
        reason = why_not_a_photo(path)
        if reason is None:
            found.photos.append(path)
        else:
            found.skipped.append(Skipped(path, reason))
    return found


def why_not_a_photo(path: Path) -> str | None:
    """``None`` for a photo, else why the file is not one (by its extension, then by its first bytes)."""
    suffix = path.suffix.lower()
    if suffix not in PHOTO_EXTENSIONS:
        return f"not a photo ({suffix or 'no extension'})"
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD_BYTES)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not head:
        return "empty file"
    if sniff_format(head) is None:
        return f"named {suffix} but its bytes are not a {', '.join(ACCEPTED_FORMATS)} image"
    return None
