"""``refund-sorter upload``: photos from a folder into the bucket, each photo once.

The bucket is versioned, so uploading the same file to the same key again would add a second version of the
same photo, and the nightly run, which moves exactly the version it classified, would leave the other one
behind in ``incoming/`` for the next night. So an upload first asks what is at the key: the same bytes
(its ``sha256`` metadata, or an ETag equal to the file's MD5) make the upload a no-op.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from refund_sorter_cli.photo_files import FolderError

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter_cli.photo_files import PhotoFolder

# One PUT per photo, never multipart, whatever its size (photos are at most 20 MiB): the ETag of a single PUT
# to an SSE-S3 bucket is the MD5 of the bytes, which is how a copy made by another client is recognised.
SINGLE_PUT = TransferConfig(multipart_threshold=5 * 1024**3)
CHECKSUM_METADATA = "sha256"


class Uploader:
    """Uploads files to ``bucket``; counts those already there byte for byte (``unchanged``)."""

    def __init__(self, bucket: PhotoBucket) -> None:
        self.bucket = bucket
        self.unchanged = 0

    def upload(self, path: Path, key: str) -> bool:
        """Put ``path`` at ``key`` unless the same bytes are there already; whether it was sent."""
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        if self._holds(key, sha256, hashlib.md5(data, usedforsecurity=False).hexdigest()):
            self.unchanged += 1
            return False
        self.bucket.client.upload_file(
            str(path),
            self.bucket.name,
            key,
            ExtraArgs={"Metadata": {CHECKSUM_METADATA: sha256}},
            Config=SINGLE_PUT,
        )
        return True

    def _holds(self, key: str, sha256: str, md5: str) -> bool:
        try:
            head = self.bucket.client.head_object(Bucket=self.bucket.name, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return head.get("Metadata", {}).get(CHECKSUM_METADATA) == sha256 or head.get("ETag", "").strip('"') == md5


def labelled_keys(folder: PhotoFolder) -> tuple[dict[Path, str], list[Path]]:
    """``upload --labelled``: each photo of ``DIR/<department>/…`` → ``<department>/…`` (under the bucket's
    ``labelled/``), and the photos that are in no department folder (left out).

    Raises
    ------
    FolderError
        No photo is in a department folder, or a folder's name cannot be a department.
    """
    from refund_sorter.heads.labelled import DEPARTMENT_NAME

    keys: dict[Path, str] = {}
    loose: list[Path] = []
    for path in folder.photos:
        relative = folder.relative(path)
        department, _, rest = relative.partition("/")
        if not rest:
            loose.append(path)
            continue
        if not DEPARTMENT_NAME.match(department):
            raise FolderError(
                f"{folder.root / department}: {department!r} cannot be a department name (letters, digits, _ . -)"
            )
        keys[path] = relative
    if folder.photos and not keys:
        raise FolderError(
            f"no department folders in {folder.root}: lay labelled photos out as {folder.root}/<department>/photo.jpg "
            f"(e.g. {folder.root}/shoes/1.jpg, {folder.root}/hats/2.jpg)"
        )
    return keys, loose
