"""The night's work as the plan step writes it and the workers read it: a manifest of chunks in S3.

Under the run's prefix (``runs/<day>/<execution>/``):

- ``chunks/<index>.json``: one chunk, ``{"index": 3, "classify": [[key, etag, size], …], "archive": […]}``:
  the photos to classify, and the photos already classified that still wait in ``incoming/`` (a run or the
  upload trigger stored their Result, then stopped before moving them) — cheap, they are only moved;
- ``manifest.json``: the JSON array the Distributed Map's ItemReader reads, one small item per chunk
  (``{"index": 3, "key": "runs/…/chunks/00003.json", "photos": 500}``). Keeping the photo lists out of the
  items keeps every child execution's input, and every line the map's ResultWriter writes, small, however
  long the keys are (Step Functions limits an item to 256 KiB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from refund_sorter.storage.bucket import StoredPhoto


@dataclass(frozen=True)
class ChunkRef:
    """A manifest item: where a chunk is and how big it is."""

    index: int
    key: str
    photos: int

    def as_item(self) -> dict[str, object]:
        return {"index": self.index, "key": self.key, "photos": self.photos}

    @classmethod
    def from_item(cls, item: dict[str, object]) -> ChunkRef:
        return cls(index=int(str(item["index"])), key=str(item["key"]), photos=int(str(item["photos"])))


@dataclass
class Chunk:
    """One worker invocation's photos."""

    index: int
    classify: list[StoredPhoto] = field(default_factory=list)
    archive: list[StoredPhoto] = field(default_factory=list)

    @property
    def photos(self) -> list[StoredPhoto]:
        return [*self.classify, *self.archive]

    def to_json(self) -> bytes:
        document = {
            "index": self.index,
            "classify": [[p.key, p.etag, p.size] for p in self.classify],
            "archive": [[p.key, p.etag, p.size] for p in self.archive],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Chunk:
        document = json.loads(data)
        return cls(
            index=int(document["index"]),
            classify=[StoredPhoto(key, etag, int(size)) for key, etag, size in document["classify"]],
            archive=[StoredPhoto(key, etag, int(size)) for key, etag, size in document["archive"]],
        )
