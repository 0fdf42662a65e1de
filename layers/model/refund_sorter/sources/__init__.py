"""Where photos come from outside AWS: local files and raw bytes (:mod:`.files`) and URLs that strangers name,
fetched with the SSRF guard (:mod:`.fetch`). S3 objects come from :mod:`refund_sorter.storage.bucket`."""
