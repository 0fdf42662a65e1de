"""The model versions as people look at them (``refund-sorter models list``, ``train --out``): the training
package's :class:`~refund_sorter_training.admin.ModelAdmin` plus listing versions and a version's files, which
no function needs (so no function's policy has to allow them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refund_sorter.errors import NotFoundError
from refund_sorter_training.admin import ModelAdmin

if TYPE_CHECKING:
    from collections.abc import Iterator


class ModelCatalogue(ModelAdmin):
    """:class:`ModelAdmin` with the listings a person asks for."""

    def versions(self) -> Iterator[dict[str, Any]]:
        """Every version's ``version.json``, oldest first (version ids start with their UTC time)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
        names = sorted(p["Prefix"][len(self.prefix) : -1] for page in pages for p in page.get("CommonPrefixes", []))
        for name in names:
            try:
                yield self.card(name)
            except NotFoundError:  # a version still being uploaded (version.json comes last)
                continue

    def files(self, version: str) -> list[str]:
        """The names of a version's files (``version.json``, ``head.npz``, the report and its pictures)."""
        prefix = self.key(version, "")
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"][len(prefix) :] for page in pages for obj in page.get("Contents", []))
