"""``refund-sorter train`` and ``refund-sorter models``: teach the sorter a shop's own departments.

``train DIR --out MODEL_DIR``
    learns from photos in ``DIR/<department>/*`` on this machine (no AWS) and writes a model version.
``train [--activate] [--out MODEL_DIR]`` (no DIR)
    starts the training job on the stack (TrainFunction: in this process on the local stack, as ``sam local
    invoke`` would; ``lambda:Invoke`` with ``--aws``) and prints its summary. The job learns from the photos
    under ``labelled/<department>/`` in the bucket plus every reviewed Result (a person's decision is a label)
    and publishes the version to ``models/<version>/``. Labelled photos get their features when they arrive
    (EmbedLabelledFunction); first, this asks that function to embed any that have none yet (uploaded before
    it was deployed, or on the local stack, where S3 notifications do not run functions), so the job learns
    from every labelled photo.
``models list | show V | activate V | rollback``
    the versions on the stack and the ACTIVE pointer every function follows (within a minute).

Both paths fit with the same code (:mod:`refund_sorter_training`), which on the stack runs in a Lambda
function with its own layer (scikit-learn, scipy): no server, no idle cost, nothing added to the model layer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

    from refund_sorter.config import Settings
    from refund_sorter.photos import Photo
    from refund_sorter.results import Result
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter_training.fit import Labelled

EXIT_BAD_DATA = 2
EXIT_JOB_FAILED = 1
TRAIN_FUNCTION = "TrainFunction"
EMBED_FUNCTION = "EmbedLabelledFunction"


def register(commands: Any) -> None:
    """Add ``train`` and ``models`` to the ``refund-sorter`` command line (``commands`` is its subparsers)."""
    train = commands.add_parser("train", help="learn the shop's own departments (a folder, or the stack's labels)")
    train.add_argument("folder", nargs="?", type=Path, metavar="DIR", help="DIR/<department>/* photos (no AWS)")
    train.add_argument("--out", type=Path, metavar="MODEL_DIR", help="write the model version here")
    choice = train.add_mutually_exclusive_group()
    choice.add_argument(
        "--activate", action="store_true", default=None, help="on the stack: make the new version active, whatever"
    )
    choice.add_argument(
        "--no-activate",
        dest="activate",
        action="store_false",
        help="on the stack: keep the active version, whatever (default: the promotion rule decides)",
    )
    train.add_argument(
        "--no-embed-missing",
        dest="embed_missing",
        action="store_false",
        help="on the stack: do not first embed labelled photos that have no features yet (they are left out)",
    )
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
    from refund_sorter.heads.model import Head, HeadError, other_backbone
    from refund_sorter.vision.sorter import Sorter, get_sorter

    if folder is None:
        return get_sorter()
    head = Head.load(folder)
    sorter = Sorter(get_settings(), heads=FixedHead(head))
    if head.backbone != sorter.classifier.info.version:
        raise HeadError(other_backbone(str(folder), head.backbone, sorter.classifier.info.version))
    return sorter


# ---------------------------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from refund_sorter_cli.stack import FunctionFailedError
    from refund_sorter_training.fit import TrainingDataError

    try:
        if args.folder is not None:
            if args.out is None or args.aws or args.activate is not None:
                message = "train DIR needs --out MODEL_DIR (and acts on this machine only)"
                print(f"refund-sorter train: {message}", file=sys.stderr)
                return EXIT_BAD_DATA
            return train_folder(args.folder, args.out, seed=args.seed)
        return train_on_stack(args, activate=args.activate, seed=args.seed)
    except TrainingDataError as exc:
        print(f"refund-sorter train: cannot train: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    except FunctionFailedError as exc:
        print(f"refund-sorter train: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED


def labelled_files(folder: Path) -> list[tuple[str, Path]]:
    """``(department, photo)`` for every file in ``folder/<department>/`` (hidden files and folders skipped)."""
    from refund_sorter.heads.labelled import DEPARTMENT_NAME
    from refund_sorter_training.fit import TrainingDataError

    if not folder.is_dir():
        raise TrainingDataError(f"{folder} is not a folder")
    found = []
    for department in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not DEPARTMENT_NAME.match(department.name):
            raise TrainingDataError(f"{department.name!r} is not a usable department name (letters, digits, _ . -)")
        found += [(department.name, p) for p in sorted(department.rglob("*")) if _is_photo_file(p)]
    if not found:
        raise TrainingDataError(
            f"no photos in department folders under {folder}: lay them out as {folder}/<department>/photo.jpg, "
            f"one folder per department (e.g. {folder}/shoes/, {folder}/hats/), at least two departments"
        )
    return found


def _is_photo_file(path: Path) -> bool:
    return path.is_file() and not any(part.startswith(".") for part in path.parts[-2:])


def embed(sorter: Sorter, photos: Iterable[Photo]) -> tuple[list[Photo], np.ndarray, np.ndarray, list[Result]]:
    """Features of photos through the Sorter's own batched decode path (exactly what it sees at run time).

    Returns the photos that worked, their float16 features, their ImageNet not-a-product probability, and
    the failed Results of those that did not (unreadable photos are left out of training, never fatal).
    """
    from refund_sorter.results import NOT_A_PRODUCT
    from refund_sorter_cli.display import progress

    photos = list(photos)
    kept: list[Photo] = []
    rows: list[np.ndarray] = []
    not_a_product: list[float] = []
    failed: list[Result] = []
    with progress("reading photos", len(photos)) as advance:  # on stderr, for more than a handful
        for outcome in sorter.classify(photos):
            advance()
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


def train_folder(folder: Path, out: Path, *, seed: int = 0) -> int:
    """``train DIR --out MODEL_DIR``: learn from ``DIR/<department>/*`` on this machine."""
    from refund_sorter.config import get_settings
    from refund_sorter.jobs.embed_labelled import backbone_sorter
    from refund_sorter.sources.files import photo_from_path
    from refund_sorter_training.fit import Labelled, check_counts

    settings = get_settings()
    files = labelled_files(folder)
    check_counts([d for d, _ in files], settings.min_photos_per_department)  # before minutes of decoding
    sources = [(department, photo_from_path(path, settings)) for department, path in files]
    department_of = {photo.source: department for department, photo in sources}
    sorter = backbone_sorter(settings)
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
    from refund_sorter_training.job import fit_and_write

    head = fit_and_write(data, settings, out, sources=sources, seed=seed, backbone=sorter.classifier.info.version)
    metrics = head.card["metrics"]
    print(
        f"model version {head.version}: {len(head.departments)} departments, hold-out accuracy "
        f"{metrics['accuracy']:.1%}; auto-sorts {metrics['coverage_at_threshold']:.1%} at confidence ≥ "
        f"{head.threshold:.3f} (target precision {settings.target_precision:.0%})"
    )
    print(f"written to {out} (report: {out / 'report.md'})")
    return 0


# ---------------------------------------------------------------------------------------------- on the stack


def _stack_settings(args: argparse.Namespace, function: str = TRAIN_FUNCTION) -> Settings:
    """The function's environment on the local stack (checked to be running), or the shell's with ``--aws``."""
    from refund_sorter_cli import stack

    return stack.settings_with("bucket", "models_table", aws=args.aws, function=function)


def run_function(args: argparse.Namespace, function: str, event: dict[str, Any]) -> dict[str, Any]:
    """Run a stack function (:func:`refund_sorter_cli.stack.run_function`) and return its answer."""
    from refund_sorter_cli import stack

    return dict(stack.run_function(function, event, aws=args.aws))


def embed_missing(args: argparse.Namespace) -> None:
    """Ask the embed function to record the features of labelled photos that have none, until none are left
    (each call works until its own time is nearly up) or a call gets no further."""
    total, milliseconds = 0, None
    while True:
        report = run_function(args, EMBED_FUNCTION, {"embed_missing": True})
        total += report["embedded"]
        milliseconds = report.get("milliseconds_per_photo") or milliseconds
        for key, why in report["failed"].items():
            print(f"  could not read {key} ({why}): it is left out", file=sys.stderr)
        if not report["remaining"] or not report["embedded"]:
            break
        print(f"  embedded {total} labelled photos so far, {report['remaining']} to go …", flush=True)
    if total:
        print(f"embedded {total} labelled photos that had no features yet ({milliseconds} ms each)")


def train_on_stack(args: argparse.Namespace, *, activate: bool | None, seed: int = 0) -> int:
    """Start the training job on the stack, print its summary; ``--out``: also download the version there."""
    if args.embed_missing:
        embed_missing(args)
    summary = run_function(args, TRAIN_FUNCTION, {"activate": activate, "seed": seed})
    print_summary(summary)
    if not summary["ok"]:
        return EXIT_BAD_DATA
    if args.out is not None:
        _download(args, summary["version"], args.out)
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    """The job's summary as a person reads it (failures on stderr, on one line)."""
    print(f"training on {summary['labelled']} labelled photos and {summary['reviewed']} reviewed Results")
    if summary["reviews_left_out"]:
        listed = ", ".join(f"{d} ({n})" for d, n in summary["reviews_left_out"].items())
        print(f"  left out reviews naming departments without labelled photos: {listed}")
    if summary["labelled_without_features"]:
        print(
            f"  left out {summary['labelled_without_features']} labelled photos without features (unreadable, or "
            "uploaded meanwhile): refund-sorter train embeds them first unless --no-embed-missing"
        )
    if summary["reviewed_without_features"]:
        print(
            f"  left out {summary['reviewed_without_features']} reviewed Results without kept features "
            "(classified before features were kept)"
        )
    if not summary["ok"]:
        hint = "" if summary["labelled"] else " (put labelled photos first: refund-sorter upload DIR --labelled)"
        print(f"refund-sorter train: cannot train: {summary['error']['message']}{hint}", file=sys.stderr)
        return
    print(
        f"model version {summary['version']}: {len(summary['departments'])} departments, hold-out accuracy "
        f"{summary['accuracy']:.1%}; auto-sorts {summary['coverage_at_threshold']:.1%} at confidence ≥ "
        f"{summary['threshold']:.3f} (target precision {summary['target_precision']:.0%}); "
        f"the job took {summary['seconds']:.1f} s"
    )
    print(f"published {summary['location']}")
    print_promotion(summary["promotion"])
    if summary["active"]:
        print(f"active: {summary['version']} (running functions switch within a minute)")
    else:
        print(f"make it active with: refund-sorter models activate {summary['version']}")


def print_promotion(promotion: dict[str, Any] | None) -> None:
    """The champion/challenger verdict and both sides' scores on the held-out decisions."""
    if not promotion:
        print("promotion: not recorded (trained before versions were compared with the active one)")
        return
    print(f"promotion: {'activated' if promotion['activated'] else 'not activated'}: {promotion['reason']}")
    sides = [("champion", promotion.get("champion")), ("challenger", promotion.get("challenger"))]
    for side, scores in sides:
        if not scores:
            print(f"  {side:<10}  none")
            continue
        print(
            f"  {side:<10}  {scores.get('version', '')}: top-1 {_share(scores.get('top1'))}, auto-sorts "
            f"{_share(scores.get('auto_share'))} at precision {_share(scores.get('precision'))} "
            f"(on {scores.get('n', 0)} held-out decisions)"
        )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _download(args: argparse.Namespace, version: str, out: Path) -> None:
    from refund_sorter_cli.model_admin import ModelCatalogue

    admin = ModelCatalogue(_stack_settings(args))
    out.mkdir(parents=True, exist_ok=True)
    for name in admin.files(version):
        (out / name).write_bytes(admin.read(version, name))
    print(f"downloaded to {out}")


# ---------------------------------------------------------------------------------------------------- models


def _registry(args: argparse.Namespace) -> Any:
    from refund_sorter_cli.model_admin import ModelCatalogue

    return ModelCatalogue(_stack_settings(args))


def _models_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from refund_sorter_cli.display import stdout_console

    registry = _registry(args)
    active = registry.pointer().version
    cards = list(registry.versions())
    # The version id is what `models show/activate` take: never cut or wrapped; the rest fold on a narrow terminal.
    table = Table()
    table.add_column("", no_wrap=True)
    table.add_column("version", no_wrap=True, min_width=max((len(c["version"]) for c in cards), default=7))
    for header in ("created", "departments", "photos", "accuracy", "threshold", "auto-sorted"):
        table.add_column(header, overflow="fold")
    for card in cards:
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
    stdout_console().print(table)
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
    print_promotion(registry.card(args.version).get("promotion"))
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
