"""refund-sorter: sorts photos of returned items into the shop department that handles them.

The data path runs one way (design.md §1):
:mod:`~refund_sorter.sources` / :mod:`~refund_sorter.fetch` / :mod:`~refund_sorter.bucket` (bytes) →
:mod:`~refund_sorter.images` (decode, orient, crop) → :mod:`~refund_sorter.classifier` (ONNX) →
:mod:`~refund_sorter.taxonomy` (ImageNet class → department) → :mod:`~refund_sorter.results` (Result) →
:mod:`~refund_sorter.store` (DynamoDB) → :mod:`~refund_sorter.export` (CSV).

:mod:`~refund_sorter.pipeline` ties the first steps together; :mod:`~refund_sorter.nightly` and
:mod:`~refund_sorter.service` are what the batch and API handlers call; :mod:`~refund_sorter.config` holds the
one settings object. :mod:`~refund_sorter.local` and :mod:`~refund_sorter.template` run the embedded stack
for development, and :mod:`~refund_sorter.cli` is the ``refund-sorter`` command.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
