"""refund-sorter's runtime: sorts photos of returned items into the shop department that handles them.

This package is what the Lambda layer ships. The data path runs one way (design.md §1), and the folders read
in its order:

- :mod:`~refund_sorter.sources` and :mod:`~refund_sorter.storage.bucket`: where a :class:`~.photos.Photo`'s
  bytes come from (a file, bytes, a URL behind the SSRF guard, an S3 object);
- :mod:`~refund_sorter.vision`: decode → ONNX classifier → ImageNet class → department, for many photos at once;
- :mod:`~refund_sorter.results`: the Result every entry point produces, and the rule that sets its status;
- :mod:`~refund_sorter.storage`: the Result store (DynamoDB), the photo bucket, the CSV export;
- :mod:`~refund_sorter.jobs` and :mod:`~refund_sorter.api`: what the batch and API functions call.

:mod:`~refund_sorter.config` holds the one settings object and :mod:`~refund_sorter.errors` the typed errors.
The command line and the local stack are the client side, in ``refund_sorter_cli``: they never ship to Lambda.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
