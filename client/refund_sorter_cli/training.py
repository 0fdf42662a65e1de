"""``refund-sorter train`` and ``refund-sorter models``: teach the sorter a shop's own departments.

``train DIR --out MODEL_DIR``
    learns from photos in ``DIR/<department>/*`` on this machine (no AWS) and writes a model version.
``train [--out MODEL_DIR] [--activate]`` (no DIR)
    learns on the stack: the photos under ``labelled/<department>/`` in the bucket plus every reviewed Result
    (a person's decision is a label), and publishes the version to ``models/<version>/``.
``models list | show V | activate V | rollback``
    the versions on the stack and the ACTIVE pointer every function follows (within a minute).

Why the fit runs here, in the CLI process, and not in a Lambda function: scikit-learn + scipy add ~150 MB,
and the model layer (142 MB) plus them is over Lambda's 250 MB limit for layers and code; a container image
would need Docker to build. The fit itself takes seconds on a few thousand features, so a server adds
nothing but idle cost and deployment weight. The running functions only read what training stores (the
head's arrays, applied with numpy), and everything training reads was stored by them: the features of
every classified photo (``embeddings/``), so training decodes a photo once at most (``labelled/`` photos,
the first time they are used).
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

    from refund_sorter.config import Settings
    from refund_sorter.photos import Photo
    from refund_sorter.results import Result
    from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter_cli.fit_head import Labelled

# A department is a folder name and an id in the API: keep it to what reads well in both.
DEPARTMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXIT_BAD_DATA = 2


def register(commands: Any) -> None:
    """Add ``train`` and ``models`` to the ``refund-sorter`` command line (``commands`` is its subparsers)."""
    train = commands.add_parser("train", help="learn the shop's own departments (a folder, or the stack's labels)")
    train.add_argument("folder", nargs="?", type=Path, metavar="DIR", help="DIR/<department>/* photos (no AWS)")
    train.add_argument("--out", type=Path, metavar="MODEL_DIR", help="write the model version here")
    train.add_argument("--activate", action="store_true", help="on the stack: make the new version active")
    train.add_argument("--seed", type=int, default=0, help="for the hold-out split and CV folds")
    train.add_argument("--aws", action="store_true", help="train on the deployed stack (no DIR)")
    train.set_defaults(run=_train)

    models = commands.add_parser("models", help="list, show, activate or roll back model versions on the stack")
    actions = models.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every version; * marks the active one")
    listing.set_defaults(run=_models_list)
    show = actions.add_parser("show", help="a version's metrics and report")
    show.add_argument("version")
    show.set_defaults(run=_models_show)
    activate = actions.add_parser("activate", help="make a version the one every function uses")
    activate.add_argument("version")
    activate.set_defaults(run=_models_activate)
    rollback = actions.add_parser("rollback", help="back to the version active before")
    rollback.set_defaults(run=_models_rollback)
    for command in (listing, show, activate, rollback):
        command.add_argument("--aws", action="store_true", help="act on the deployed stack")


def sorter_with_head(folder: Path | None) -> Sorter:
    """The Sorter ``classify`` uses: the process-wide one, or one sorting with the head in ``folder``."""
    from refund_sorter.config import get_settings
    from refund_sorter.heads.active import FixedHead
    from refund_sorter.heads.model import Head, HeadError
    from refund_sorter.vision.sorter import Sorter, get_sorter

    if folder is None:
        return get_sorter()
    head = Head.load(folder)
    sorter = Sorter(get_settings(), heads=FixedHead(head))
    if head.backbone != sorter.classifier.info.version:
        raise HeadError(f"{folder} was trained on {head.backbone}; this model is {sorter.classifier.info.version}")
    return sorter


# ---------------------------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from refund_sorter_cli.fit_head import TrainingDataError

    try:
        if args.folder is not None:
            if args.out is None or args.aws or args.activate:
                print("train DIR needs --out MODEL_DIR (and acts on this machine only)", file=sys.stderr)
                return EXIT_BAD_DATA
            return train_folder(args.folder, args.out, seed=args.seed)
        return train_on_stack(args.out, activate=args.activate, aws=args.aws, seed=args.seed)
    except TrainingDataError as exc:
        print(f"cannot train: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA


def labelled_files(folder: Path) -> list[tuple[str, Path]]:
    """``(department, photo)`` for every file in ``folder/<department>/`` (hidden files and folders skipped)."""
    from refund_sorter_cli.fit_head import TrainingDataError

    if not folder.is_dir():
        raise TrainingDataError(f"{folder} is not a folder")
    found = []
    for department in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not DEPARTMENT_NAME.match(department.name):
            raise TrainingDataError(f"{department.name!r} is not a usable department name (letters, digits, _ . -)")
        found += [(department.name, p) for p in sorted(department.rglob("*")) if _is_photo_file(p)]
    return found


def _is_photo_file(path: Path) -> bool:
    return path.is_file() and not any(part.startswith(".") for part in path.parts[-2:])


def embed(sorter: Sorter, photos: Iterable[Photo]) -> tuple[list[Photo], np.ndarray, np.ndarray, list[Result]]:
    """Features of photos through the Sorter's own batched decode path (exactly what it sees at run time).

    Returns the photos that worked, their float16 features, their ImageNet not-a-product probability, and
    the failed Results of those that did not (unreadable photos are left out of training, never fatal).
    """
    from refund_sorter.results import NOT_A_PRODUCT

    kept: list[Photo] = []
    rows: list[np.ndarray] = []
    not_a_product: list[float] = []
    failed: list[Result] = []
    for outcome in sorter.classify(photos):
        if outcome.result is None or outcome.embedding is None:
            if outcome.result is not None:
                failed.append(outcome.result)
            continue
        kept.append(outcome.photo)
        rows.append(outcome.embedding)
        scores = {s.department: s.confidence for s in outcome.result.top_departments}
        not_a_product.append(scores.get(NOT_A_PRODUCT, 0.0))
    features = np.stack(rows) if rows else np.zeros((0, 0), np.float16)
    return kept, features, np.array(not_a_product), failed


def training_sorter(settings: Settings) -> Sorter:
    """A Sorter that never applies a head: training learns on the backbone's features and ImageNet's gate."""
    from refund_sorter.heads.active import FixedHead
    from refund_sorter.vision.sorter import Sorter

    return Sorter(settings, heads=FixedHead(None))


def train_folder(folder: Path, out: Path, *, seed: int = 0) -> int:
    """``train DIR --out MODEL_DIR``: learn from ``DIR/<department>/*`` on this machine."""
    from refund_sorter.config import get_settings
    from refund_sorter.sources.files import photo_from_path
    from refund_sorter_cli.fit_head import Labelled, check_counts

    settings = get_settings()
    files = labelled_files(folder)
    check_counts([d for d, _ in files], settings.min_photos_per_department)  # before minutes of decoding
    sources = [(department, photo_from_path(path, settings)) for department, path in files]
    department_of = {photo.source: department for department, photo in sources}
    sorter = training_sorter(settings)
    print(f"reading {len(files)} photos of {len(set(department_of.values()))} departments in {folder} …", flush=True)
    photos, features, not_a_product, failed = embed(sorter, (photo for _, photo in sources))
    for result in failed:
        print(f"  skipped {result.source}: {result.error.code if result.error else 'failed'}", file=sys.stderr)
    data = Labelled(features, [department_of[p.source] for p in photos], [p.source for p in photos], not_a_product)
    origin = {"folder": str(folder), "photos_skipped": len(failed)}
    return _fit_and_write(data, sorter, settings, out, origin, seed=seed)


def _fit_and_write(
    data: Labelled, sorter: Sorter, settings: Settings, out: Path, sources: dict[str, Any], *, seed: int
) -> int:
    from refund_sorter_cli.fit_head import fit
    from refund_sorter_cli.head_report import write_report

    head = fit(
        data,
        backbone=sorter.classifier.info.version,
        target_precision=settings.target_precision,
        gate=settings.not_a_product_gate,
        minimum=settings.min_photos_per_department,
        seed=seed,
        sources=sources,
    )
    head.save(out)
    report = write_report(head, out)
    metrics = head.card["metrics"]
    print(
        f"model version {head.version}: {len(head.departments)} departments, hold-out accuracy "
        f"{metrics['accuracy']:.1%}; auto-sorts {metrics['coverage_at_threshold']:.1%} at confidence ≥ "
        f"{head.threshold:.3f} (target precision {settings.target_precision:.0%})"
    )
    print(f"written to {out} (report: {report})")
    return 0


# ---------------------------------------------------------------------------------------------- on the stack


def _stack_settings(aws: bool) -> Settings:
    """The batch function's environment on the local stack (as ``batch`` uses), or the shell's with ``--aws``."""
    from refund_sorter.config import get_settings
    from refund_sorter_cli.local_stack import apply_function_environment, use_local_aws
    from refund_sorter_cli.template import Template

    if not aws:
        use_local_aws()
        apply_function_environment(Template(), "ClassifyChunkFunction")
    return get_settings()


def train_on_stack(out: Path | None, *, activate: bool, aws: bool, seed: int = 0) -> int:
    """Learn from ``labelled/<department>/`` and every reviewed Result; publish the version to the bucket."""
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter_cli.fit_head import Labelled
    from refund_sorter_cli.model_admin import ModelAdmin

    settings = _stack_settings(aws)
    bucket = PhotoBucket(settings)
    sorter = training_sorter(settings)
    labelled = labelled_from_bucket(sorter, bucket)
    reviewed = reviewed_from_store(DynamoResultStore(settings.table), bucket)
    if labelled.departments:
        reviewed = only_departments(reviewed, set(labelled.departments))
    data = Labelled(
        np.concatenate([part.embeddings for part in (labelled, reviewed) if len(part.departments)])
        if len(labelled.departments) + len(reviewed.departments)
        else np.zeros((0, 0), np.float16),
        labelled.departments + reviewed.departments,
        labelled.sources + reviewed.sources,
    )
    print(f"training on {len(labelled.departments)} labelled photos and {len(reviewed.departments)} reviewed Results")
    sources = {"labelled": len(labelled.departments), "reviewed": len(reviewed.departments), "bucket": bucket.name}
    with tempfile.TemporaryDirectory() as scratch:
        folder = out or Path(scratch)
        _fit_and_write(data, sorter, settings, folder, sources, seed=seed)
        registry = ModelAdmin(settings, bucket.client)
        version = registry.publish(folder)
    print(f"published {bucket.uri(registry.key(version, ''))}")
    if activate:
        registry.activate(version)
        print(f"active: {version} (running functions switch within {settings.head_pointer_ttl_seconds:.0f} s)")
    else:
        print(f"make it active with: refund-sorter models activate {version}")
    return 0


def labelled_from_bucket(sorter: Sorter, bucket: PhotoBucket) -> Labelled:
    """Features of ``labelled/<department>/*``: kept ones from earlier trainings, new ones decoded once."""
    from refund_sorter.heads.embeddings import LABELLED_FOLDER, EmbeddingLog
    from refund_sorter.storage.bucket import StoredPhoto
    from refund_sorter_cli.fit_head import Labelled
    from refund_sorter_cli.model_admin import load_embeddings

    prefix = bucket.settings.labelled_prefix
    photos: list[tuple[str, StoredPhoto]] = []
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for obj in page.get("Contents", []):
            department, _, name = obj["Key"][len(prefix) :].partition("/")
            if name and not name.endswith("/") and DEPARTMENT_NAME.match(department):
                photos.append((department, StoredPhoto(obj["Key"], obj["ETag"].strip('"'), obj["Size"])))
    kept = load_embeddings(bucket.client, bucket.name, [bucket.settings.embeddings_prefix + LABELLED_FOLDER])
    new = [stored for _, stored in photos if stored.result_id not in kept]
    if new:
        print(f"reading {len(new)} labelled photos not seen before …", flush=True)
        log = EmbeddingLog(bucket, LABELLED_FOLDER)
        done, features, _, failed = embed(sorter, (bucket.photo(stored) for stored in new))
        for photo, row in zip(done, features, strict=True):
            log.record(photo.id, row)
            kept[photo.id] = row
        log.flush()
        for result in failed:
            print(f"  skipped {result.source}: {result.error.code if result.error else 'failed'}", file=sys.stderr)
    usable = [(d, s) for d, s in photos if s.result_id in kept]
    return Labelled(
        np.stack([kept[s.result_id] for _, s in usable]) if usable else np.zeros((0, 0), np.float16),
        [d for d, _ in usable],
        [bucket.uri(s.key) for _, s in usable],
    )


def reviewed_from_store(store: DynamoResultStore, bucket: PhotoBucket) -> Labelled:
    """Every reviewed Result as a label (the person's department), with the features kept when it ran."""
    from refund_sorter.heads.embeddings import RESULTS_FOLDER
    from refund_sorter_cli.fit_head import Labelled
    from refund_sorter_cli.model_admin import load_embeddings

    reviewed = [r for r in reviewed_results(store) if r.review is not None]
    days = sorted({r.day for r in reviewed})
    prefix = bucket.settings.embeddings_prefix + RESULTS_FOLDER
    kept = load_embeddings(bucket.client, bucket.name, [f"{prefix}{day}/" for day in days])
    usable = [r for r in reviewed if r.id in kept]
    if len(usable) < len(reviewed):
        missing = len(reviewed) - len(usable)
        print(f"  left out {missing} reviewed Results without kept features (classified before features were kept)")
    return Labelled(
        np.stack([kept[r.id] for r in usable]) if usable else np.zeros((0, 0), np.float16),
        [r.review.department for r in usable if r.review is not None],
        [r.source for r in usable],
    )


def only_departments(data: Labelled, departments: set[str]) -> Labelled:
    """Reviews naming a department that has labelled photos. The others were made before this shop's
    departments existed (e.g. the ImageNet taxonomy's ``clothing``): counting them would make departments out
    of a few photos each, which training would then refuse."""
    from refund_sorter_cli.fit_head import Labelled

    keep = [i for i, department in enumerate(data.departments) if department in departments]
    left_out = Counter(d for d in data.departments if d not in departments)
    if left_out:
        listed = ", ".join(f"{d} ({n})" for d, n in sorted(left_out.items()))
        print(f"  left out reviews naming departments without labelled photos: {listed}")
    return Labelled(
        data.embeddings[keep] if keep else np.zeros((0, 0), np.float16),
        [data.departments[i] for i in keep],
        [data.sources[i] for i in keep],
    )


def reviewed_results(store: DynamoResultStore) -> Iterable[Result]:
    """Every Result a person decided (a filtered scan: training runs rarely, the table has no status index)."""
    pages = store.client.get_paginator("scan").paginate(
        TableName=store.table,
        FilterExpression="#status = :reviewed",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":reviewed": {"S": "reviewed"}},
    )
    for page in pages:
        yield from (store._from_item(item) for item in page["Items"])


# ---------------------------------------------------------------------------------------------------- models


def _registry(args: argparse.Namespace) -> Any:
    from refund_sorter_cli.model_admin import ModelAdmin

    return ModelAdmin(_stack_settings(args.aws))


def _models_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry = _registry(args)
    active = registry.pointer().version
    table = Table("", "version", "created", "departments", "photos", "accuracy", "threshold", "auto-sorted")
    for card in registry.versions():
        metrics = card.get("metrics", {})
        table.add_row(
            "*" if card["version"] == active else "",
            card["version"],
            card.get("created_at", ""),
            str(len(card["departments"])),
            str(card.get("training", {}).get("photos", "")),
            f"{metrics.get('accuracy', 0):.1%}",
            f"{card['threshold']:.3f}",
            f"{metrics.get('coverage_at_threshold', 0):.1%}",
        )
    Console().print(table)
    print(f"active: {active or 'none (the ImageNet taxonomy sorts)'}")
    return 0


def _models_show(args: argparse.Namespace) -> int:
    from refund_sorter.errors import NotFoundError

    registry = _registry(args)
    try:
        report = registry.read(args.version, "report.md").decode("utf-8")
    except NotFoundError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(report)
    print(f"files: s3://{registry.bucket}/{registry.key(args.version, '')}")
    return 0


def _models_activate(args: argparse.Namespace) -> int:
    from refund_sorter.errors import RefundSorterError

    registry = _registry(args)
    try:
        pointer = registry.activate(args.version)
    except RefundSorterError as exc:
        print(f"cannot activate {args.version}: {exc.message}", file=sys.stderr)
        return 1
    ttl = registry.settings.head_pointer_ttl_seconds
    before = ", ".join(pointer.history) or "none"
    print(f"active: {pointer.version} (running functions switch within {ttl:.0f} s); before: {before}")
    return 0


def _models_rollback(args: argparse.Namespace) -> int:
    from refund_sorter.errors import RefundSorterError

    registry = _registry(args)
    try:
        pointer = registry.rollback()
    except RefundSorterError as exc:
        print(f"cannot roll back: {exc.message}", file=sys.stderr)
        return 1
    print(f"active: {pointer.version or 'none (the ImageNet taxonomy sorts)'}")
    return 0
