"""The work the batch functions do: the nightly run (:mod:`.nightly`) and the upload trigger (:mod:`.upload`),
both over :func:`.stored.classify_stored`."""
