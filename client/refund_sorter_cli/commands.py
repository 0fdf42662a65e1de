"""``refund-sorter``: classify photos locally, run the embedded stack, drive a deployed or local stack.

Commands that talk to AWS use whatever endpoint ``AWS_ENDPOINT_URL`` names (the local stack in dev).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from refund_sorter.jobs.report import BatchReport
    from refund_sorter.results import Result
    from refund_sorter_cli.template import Template


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refund-sorter", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    classify = commands.add_parser("classify", help="classify photo files or URLs on this machine (no AWS)")
    classify.add_argument("inputs", nargs="+", metavar="PATH|URL")
    classify.add_argument("--json", action="store_true", help="print one Result JSON per line")
    classify.set_defaults(run=_classify)

    local = commands.add_parser("local", help="run the embedded stack (moto :5000, API :3000) in the foreground")
    local.set_defaults(run=_local)

    upload = commands.add_parser("upload", help="upload a folder's photos to the bucket's incoming/")
    upload.add_argument("folder", type=Path, metavar="DIR")
    upload.set_defaults(run=_upload)

    batch = commands.add_parser("batch", help="run the nightly batch now, with a progress bar")
    batch.set_defaults(run=_batch)

    export = commands.add_parser("export", help="a day's results as CSV")
    export.add_argument("--date", required=True, metavar="YYYY-MM-DD")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of standard output")
    export.set_defaults(run=_export)

    invoke = commands.add_parser("invoke", help="run a function's handler with an event, like sam local invoke")
    invoke.add_argument("function", metavar="FUNCTION", help="the template's logical id, e.g. BatchFunction")
    invoke.add_argument("--event", type=Path, required=True, metavar="FILE")
    invoke.set_defaults(run=_invoke)
    for command in (upload, batch, export, invoke):
        command.add_argument(
            "--aws", action="store_true", help="act on AWS (REFUND_SORTER_BUCKET/TABLE from the stack outputs)"
        )
    return parser


def _classify(args: argparse.Namespace) -> int:
    from refund_sorter.sources.files import is_url, photo_from_path, photo_from_url
    from refund_sorter.vision.sorter import get_sorter

    sorter = get_sorter()
    settings = sorter.settings
    photos = [
        photo_from_url(item, settings) if is_url(item) else photo_from_path(Path(item), settings)
        for item in args.inputs
    ]
    results: list[Result] = []
    for outcome in sorter.classify(photos):
        if outcome.result is None:  # a network error while fetching a URL: still the input's failure here
            from refund_sorter.errors import ErrorCode, FetchError

            error = FetchError(ErrorCode.FETCH_FAILED, f"could not fetch: {outcome.transient_error}")
            results.append(sorter.failed_result(outcome.photo, error))
        else:
            results.append(outcome.result)
        if args.json:
            print(results[-1].model_dump_json(), flush=True)
    if not args.json:
        print_results(results)
    return 1 if any(r.status == "failed" for r in results) else 0


def _aws_context(args: argparse.Namespace, function: str = "BatchFunction") -> Template:
    """Where upload/batch/export/invoke act: the local stack with the template's environment by default; with
    ``--aws``, real AWS as the environment's credentials, region and REFUND_SORTER_* variables say."""
    from refund_sorter_cli.local_stack import apply_function_environment, use_local_aws
    from refund_sorter_cli.template import Template

    template = Template()
    if not args.aws:
        use_local_aws()
        apply_function_environment(template, function)
    return template


def _local(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from refund_sorter_cli.local_stack import LocalStack
    from refund_sorter_cli.template import Template

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto call drowns everything else
    stack = LocalStack(Template()).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(f"moto (S3, DynamoDB) on {stack.moto_url}; API on {stack.api_url} (Swagger UI at {stack.api_url}/swagger)")
    print(f"review page: {stack.api_url}/review")
    print(f"export AWS_ENDPOINT_URL={stack.moto_url}   # for the AWS CLI; Ctrl-C stops", flush=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def _upload(args: argparse.Namespace) -> int:
    from refund_sorter.config import get_settings
    from refund_sorter.storage.bucket import PhotoBucket

    _aws_context(args)
    bucket = PhotoBucket(get_settings())
    files = sorted(p for p in args.folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in files:
        key = bucket.settings.incoming_prefix + path.relative_to(args.folder).as_posix()
        bucket.client.upload_file(str(path), bucket.name, key)
        print(f"{path} -> {bucket.uri(key)}")
    print(f"{len(files)} photos uploaded")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from refund_sorter.config import get_settings
    from refund_sorter.jobs.nightly import run_nightly
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.vision.sorter import get_sorter

    _aws_context(args)
    settings = get_settings()
    bucket = PhotoBucket(settings)
    store = DynamoResultStore(settings.table)
    waiting = sum(1 for _ in bucket.incoming())  # one extra listing, for the progress bar's total
    results: list[Result] = []

    columns = (TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("batch", total=waiting)

        def advance(report: BatchReport, result: Result | None) -> None:
            progress.advance(task)
            if result is not None:
                results.append(result)

        report = run_nightly(get_sorter(), store, bucket, on_result=advance)
    print_results(results)
    print(
        f"classified {report.classified}, needs review {report.needs_review}, failed {report.failed}, "
        f"already done {report.already_done}, left for next run {report.deferred} in {report.seconds:.1f} s"
    )
    print(f"export: {bucket.uri(report.export_key or '')} ({report.export_rows} rows)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from refund_sorter.config import get_settings
    from refund_sorter.days import parse_day
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.storage.export import csv_lines

    _aws_context(args)
    lines = csv_lines(DynamoResultStore(get_settings().table).by_day(parse_day(args.date)))
    if args.out is None:
        sys.stdout.writelines(line.removeprefix("\ufeff") for line in lines)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as out:
        rows = sum(1 for line in lines if out.write(line)) - 1
    print(f"{args.out} ({rows} rows)")
    return 0


def _invoke(args: argparse.Namespace) -> int:
    import json

    from refund_sorter_cli.local_stack import invoke

    template = _aws_context(args, args.function)
    reply = invoke(template, args.function, json.loads(args.event.read_text(encoding="utf-8")))
    print(json.dumps(reply, indent=2, default=str))
    return 0


def print_results(results: Sequence[Result]) -> None:
    """A table for people (rich when installed, plain text otherwise — the Lambda layer has no rich)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for r in results:
            outcome = r.error.message if r.error else f"{r.prediction} {r.confidence:.2f} ({r.label})"
            print(f"{r.status:<13} {outcome}  {r.source}")
        return
    table = Table("photo", "status", "department", "conf.", "top ImageNet label", "why not")
    for r in results:
        table.add_row(
            r.source.rstrip("/").rsplit("/", 1)[-1],
            r.status,
            r.prediction or "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            f"{r.label} ({r.label_confidence:.2f})" if r.label and r.label_confidence is not None else "",
            r.error.code if r.error else "",
        )
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
