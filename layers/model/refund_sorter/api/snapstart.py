"""Lambda SnapStart for the API function: what goes into the snapshot, and what is made anew after a restore.

With SnapStart (infra/template.yaml, ``PredictSnapStart``), Lambda initialises each published version once, runs the
before-snapshot hooks, and saves the memory of the process; new execution environments resume from that copy
instead of importing and loading everything again.

Before the snapshot, :func:`prepare_snapshot` builds the service (settings, taxonomy, the onnxruntime session),
loads every accepted format's decoder, classifies one generated photo through the whole path (decode → model →
departments), so onnxruntime's session, its memory arenas and first-run work are in the snapshot, and imports
what the first request would import (boto3 and the storage and fetch modules: otherwise most of a restored
process's first request, bench/snapstart.py). It makes no network client and stores nothing.

After a restore, :func:`refresh_after_restore` forgets what must not be shared between the copies of one
snapshot: boto3 clients (their connections and credentials belong to the environment that was snapshotted), the
service built on them (its store, bucket and idempotency layer hold clients), and the ``random`` module's state
(every copy would otherwise draw the same numbers: botocore's retry jitter uses it). ``uuid.uuid4`` and
``secrets`` read ``os.urandom`` and need nothing.

The hooks live in ``snapshot_restore_py``, which only the Lambda runtime provides (and the dev extra, for tests):
elsewhere :func:`register_snapstart_hooks` does nothing.
"""

from __future__ import annotations

import importlib
import io
import random

from refund_sorter.api.service import get_service
from refund_sorter.heads.active import FixedHead
from refund_sorter.photos import Photo
from refund_sorter.storage.clients import reset_clients
from refund_sorter.vision.sorter import Sorter, get_sorter

__all__ = ["prepare_snapshot", "refresh_after_restore", "register_snapstart_hooks"]

# A phone photo's aspect ratio, small enough to encode in milliseconds; the JPEG path (draft, crop) runs as for one.
WARM_UP_SIZE = (640, 480)
# Imported before the snapshot, never used there: no client, no connection, no credentials until a request.
FIRST_REQUEST_MODULES = ("boto3", "refund_sorter.storage.dynamodb", "refund_sorter.storage.bucket",
                         "refund_sorter.sources.files")  # fmt: skip


def prepare_snapshot() -> None:
    """Load the model and run one inference (a before-snapshot hook): the work a restored process then skips."""
    from refund_sorter.vision.images import register_decoders

    sorter = get_service().sorter
    register_decoders()
    # Decode and infer without a head: which head is active is read after restore (a DynamoDB client made now
    # would be in the snapshot, its connections dead in every restored copy).
    warm_up = Sorter(sorter.settings, classifier=sorter.classifier, taxonomy=sorter.taxonomy, heads=FixedHead(None))
    warm_up.classify_one(Photo(id="snapstart-warm-up", source="snapstart:warm-up", read=_warm_up_jpeg))
    for module in FIRST_REQUEST_MODULES:
        importlib.import_module(module)


def refresh_after_restore() -> None:
    """Drop network clients, the service holding them, and shared random state (an after-restore hook)."""
    reset_clients()
    get_service.cache_clear()  # rebuilt on the next request around the same Sorter (get_sorter keeps its model)
    get_sorter().heads.forget()  # the active head is read anew, through the new clients
    random.seed()  # from os.urandom: each restored copy gets its own sequence


def register_snapstart_hooks() -> bool:
    """Register :func:`prepare_snapshot` and :func:`refresh_after_restore` with Lambda's runtime.

    Returns whether they were registered: ``False`` where ``snapshot_restore_py`` does not exist (a developer's
    machine, the local stack), which then behaves as a function without SnapStart.
    """
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(prepare_snapshot)
    register_after_restore(refresh_after_restore)
    return True


def _warm_up_jpeg() -> bytes:
    from PIL import Image

    gradient = Image.linear_gradient("L").resize(WARM_UP_SIZE)
    picture = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
