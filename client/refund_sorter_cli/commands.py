"""``refund-sorter``: classify photos locally, run the embedded stack, drive a deployed or local stack.

Commands that talk to AWS use whatever endpoint ``AWS_ENDPOINT_URL`` names (the local stack in dev); ``--aws``
means the deployed stack, the same way for every command (:mod:`refund_sorter_cli.stack`).

Exit status (:data:`EXIT_CODES`, also in ``refund-sorter --help`` and README): 0 done; 1 the work ran and some
of it failed (photos, an AWS call, a function); 2 the command cannot run as asked (bad arguments, a missing or
unreadable file or folder, a setting missing, the local stack not running, a port taken); 3 nothing done
because another nightly run holds the lease; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from refund_sorter.config import Settings
    from refund_sorter.photos import Photo
    from refund_sorter.results import Result
    from refund_sorter_cli.photo_files import Skipped

EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2
EXIT_LEASE_HELD = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    0: "done",
    EXIT_FAILED: "the work ran and some of it failed (photos, an AWS call, a function)",
    EXIT_CANNOT_RUN: "the command cannot run as asked (arguments, files, settings, the stack not running)",
    EXIT_LEASE_HELD: "batch: nothing done, another nightly run holds the lease (try later, or --break-lease)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
DESCRIPTION = "Sort photos of returned items into departments: on this machine, or on the local or deployed stack."


class CommandError(Exception):
    """The command cannot run as asked; the message says why and what to do (exit status 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `refund-sorter export | head`: the reader took what it wanted and left, as it may; like `cat | head`,
        # that is no failure. Point stdout at /dev/null so the interpreter's final flush does not complain
        # (Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # the expected ones become one line; anything else is a bug and re-raises
        message = _one_line(exc)
        if message is None:
            raise
        print(f"refund-sorter {args.command}: {message}", file=sys.stderr)
        return EXIT_FAILED if _is_failed_work(exc) else EXIT_CANNOT_RUN


def _one_line(exc: Exception) -> str | None:
    """The one-line explanation of an error a person can act on, or ``None`` for a real bug."""
    from botocore.exceptions import BotoCoreError, ClientError

    from refund_sorter.errors import RefundSorterError
    from refund_sorter_cli.local_stack import LocalStackError
    from refund_sorter_cli.photo_files import FolderError
    from refund_sorter_cli.stack import FunctionFailedError, StackError

    if isinstance(exc, (CommandError, LocalStackError, FolderError, StackError, FunctionFailedError)):
        return " ".join(str(exc).split())
    if isinstance(exc, RefundSorterError):
        return " ".join(exc.message.split())
    if isinstance(exc, (ClientError, BotoCoreError)):
        return f"AWS refused: {exc}"
    return None


def _is_failed_work(exc: Exception) -> bool:
    """Whether the command ran and part of the work failed (exit 1), rather than could not run (exit 2)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from refund_sorter.errors import RefundSorterError
    from refund_sorter_cli.stack import FunctionFailedError

    return isinstance(exc, (ClientError, BotoCoreError, RefundSorterError, FunctionFailedError))


class _Parser(argparse.ArgumentParser):
    """argparse, with its complaints on one line (the usage is one ``--help`` away) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CANNOT_RUN, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = _Parser(
        prog="refund-sorter",
        description=DESCRIPTION,
        epilog=f"exit status:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")

    classify = commands.add_parser(
        "classify", help="classify photo files, folders of photos or URLs on this machine (no AWS)"
    )
    classify.add_argument("inputs", nargs="+", metavar="PATH|DIR|URL")
    classify.add_argument("--json", action="store_true", help="print one Result JSON per line")
    classify.add_argument("--head", type=Path, metavar="MODEL_DIR", help="sort with this trained head (train --out)")
    classify.set_defaults(run=_classify)

    local = commands.add_parser(
        "local", help="run the embedded stack (moto :5000, API :3000) in the foreground; Ctrl-C stops it"
    )
    local.add_argument("--moto-port", type=int, metavar="PORT", help="moto's port (env REFUND_SORTER_MOTO_PORT)")
    local.add_argument("--api-port", type=int, metavar="PORT", help="the API's port (env REFUND_SORTER_API_PORT)")
    local.set_defaults(run=_local)

    upload = commands.add_parser(
        "upload", help="upload a folder's photos to the bucket's incoming/ (or, --labelled, labelled/<department>/)"
    )
    upload.add_argument("folder", type=Path, metavar="DIR")
    upload.add_argument(
        "--labelled",
        action="store_true",
        help="DIR/<department>/* are labelled photos for `train`: they go to labelled/<department>/",
    )
    upload.add_argument(
        "--aws", action="store_true", help="the deployed stack's bucket (REFUND_SORTER_BUCKET, a stack output)"
    )
    upload.set_defaults(run=_upload)

    batch = commands.add_parser("batch", help="run the nightly state machine now, with a progress bar")
    batch.add_argument("--workers", type=_positive, metavar="N", help="worker processes at once (default: one per CPU)")
    batch.add_argument(
        "--break-lease",
        action="store_true",
        help="take the nightly lease from whichever run holds it (only when you know that run is gone)",
    )
    batch.add_argument(
        "--aws",
        action="store_true",
        help="start the deployed state machine instead (REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN, a stack output)",
    )
    batch.set_defaults(run=_batch)

    export = commands.add_parser("export", help="a day's results as CSV")
    export.add_argument(
        "--date", type=_day, default="today", metavar="DAY", help="YYYY-MM-DD, today (the default) or yesterday (UTC)"
    )
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of standard output")
    export.add_argument(
        "--aws", action="store_true", help="the deployed stack's results (REFUND_SORTER_TABLE, a stack output)"
    )
    export.set_defaults(run=_export)

    invoke = commands.add_parser("invoke", help="run a function's handler with an event, like sam local invoke")
    invoke.add_argument("function", metavar="FUNCTION", help="the template's logical id, e.g. PlanFunction")
    invoke.add_argument(
        "--event", type=Path, required=True, metavar="FILE", help="the event, a JSON file (events/ has one per kind)"
    )
    invoke.add_argument(
        "--aws",
        action="store_true",
        help="invoke the deployed function instead (its name in REFUND_SORTER_<NAME>_FUNCTION, e.g. "
        "REFUND_SORTER_PLAN_FUNCTION, from the stack output <FUNCTION>Name)",
    )
    invoke.set_defaults(run=_invoke)
    from refund_sorter_cli import training

    training.register(commands)  # train, models
    return parser


def _positive(text: str) -> int:
    """``--workers``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers: use 1 or more")
    return value


def _day(text: str) -> str:
    """``--date``: a UTC day as ``YYYY-MM-DD``; ``today`` and ``yesterday`` too."""
    from refund_sorter.days import parse_day
    from refund_sorter.errors import InvalidRequestError
    from refund_sorter.results import utc_now

    words = {"today": 0, "yesterday": 1}
    if text.strip().lower() in words:
        return (utc_now().date() - timedelta(days=words[text.strip().lower()])).isoformat()
    try:
        return parse_day(text.strip())
    except InvalidRequestError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: use YYYY-MM-DD, today or yesterday") from None


# --- classify -----------------------------------------------------------------------------------------------


def _classify(args: argparse.Namespace) -> int:
    from refund_sorter.errors import ErrorCode, FetchError
    from refund_sorter.heads.model import HeadError
    from refund_sorter_cli.display import print_results, progress, summary
    from refund_sorter_cli.training import sorter_with_head

    if args.head is not None and not args.head.is_dir():
        raise CommandError(f"--head {args.head}: no such folder (give the MODEL_DIR `train --out` wrote)")
    try:
        sorter = sorter_with_head(args.head)
    except HeadError as exc:  # a folder that is no model version: the argument is wrong, nothing ran
        raise CommandError(f"--head {exc.message}") from exc
    photos, shown = _photos_to_classify(args.inputs, sorter.settings)
    results: list[Result] = []
    with progress("classifying", len(photos)) as advance:
        for outcome in sorter.classify(photos):
            if outcome.result is None:  # a network error while fetching a URL: still the input's failure here
                error = FetchError(ErrorCode.FETCH_FAILED, f"could not fetch: {outcome.transient_error}")
                results.append(sorter.failed_result(outcome.photo, error))
            else:
                results.append(outcome.result)
            advance()
            if args.json:
                print(results[-1].model_dump_json(), flush=True)
    if args.json:
        print(summary(results), file=sys.stderr)
    else:
        print_results(results, sorter.settings.confidence_threshold, name_of=lambda r: shown.get(r.source))
        print(summary(results))
    return EXIT_FAILED if any(r.status == "failed" for r in results) else 0


def _photos_to_classify(inputs: Sequence[str], settings: Settings) -> tuple[list[Photo], dict[str, str]]:
    """URLs, files and the photos inside folders, in the order given (a folder's photos sorted by path), and
    how the table names each: a folder's photo by its path inside the folder (``dress/x.jpg``, ``hat/x.jpg``), a
    file as typed (its name alone when typed as an absolute path).

    A file that does not exist stays in the list: it becomes a ``failed`` Result (``not_found``), like any
    other input that cannot be read. Folders with no photo at all and nothing else to classify: a
    :class:`CommandError` (exit 2) saying what a photo is.
    """
    from refund_sorter.sources.files import is_url, photo_from_path, photo_from_url
    from refund_sorter_cli.photo_files import PHOTO_EXTENSIONS, find_photos

    photos: list[Photo] = []
    shown: dict[str, str] = {}
    empty: list[str] = []
    for item in inputs:
        if is_url(item):
            photos.append(photo_from_url(item, settings))
        elif Path(item).is_dir():
            folder = find_photos(Path(item))
            _note_skipped(folder.skipped)
            if not folder.photos:
                empty.append(item)
            for path in folder.photos:
                photo = photo_from_path(path, settings)
                shown[photo.source] = folder.relative(path)
                photos.append(photo)
        else:
            photo = photo_from_path(Path(item), settings)
            shown[photo.source] = Path(item).name if Path(item).is_absolute() else item  # as typed, or short
            photos.append(photo)
    if empty and not photos:
        kinds = ", ".join(sorted(e.removeprefix(".") for e in PHOTO_EXTENSIONS))
        raise CommandError(f"no photos in {', '.join(empty)} (looked for {kinds} files, in subfolders too)")
    for item in empty:
        print(f"note: no photos in {item}", file=sys.stderr)
    return photos, shown


def _note_skipped(skipped: Sequence[Skipped]) -> None:
    for item in skipped:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)


# --- the local stack --------------------------------------------------------------------------------------------


def _local(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from refund_sorter_cli.local_stack import LocalPorts, LocalStack
    from refund_sorter_cli.template import Template

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto call drowns everything else
    ports = LocalPorts.from_environment()
    stack = LocalStack(
        Template(),
        moto_port=ports.moto_port if args.moto_port is None else args.moto_port,
        api_port=ports.api_port if args.api_port is None else args.api_port,
    ).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        print(_stack_banner(stack.moto_url, stack.api_url, stack.client_environment()), flush=True)
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def _stack_banner(moto_url: str, api_url: str, environment: dict[str, str]) -> str:
    """What a person needs next: the addresses, and a block to paste into another shell."""
    exports = "\n".join(f"export {key}={value}" for key, value in environment.items())
    return (
        f"The local stack is running (Ctrl-C stops it).\n"
        f"  API          {api_url}   Swagger UI {api_url}/swagger   review page {api_url}/review\n"
        f"  S3/DynamoDB  {moto_url}   (moto)\n"
        f"\n"
        f"# In another shell, for the AWS CLI, boto3 and refund-sorter upload/batch/export:\n"
        f"{exports}\n"
        f"# e.g. aws s3 ls s3://$REFUND_SORTER_BUCKET/ --recursive\n"
    )


# --- upload, batch, export, invoke -----------------------------------------------------------------------------


def _upload(args: argparse.Namespace) -> int:
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter_cli import stack
    from refund_sorter_cli.display import PROGRESS_FROM, plural, progress
    from refund_sorter_cli.photo_files import find_photos
    from refund_sorter_cli.uploads import Uploader, labelled_keys

    # The folder first: a wrong folder needs no stack to say so.
    folder = find_photos(args.folder)
    relative, not_in_a_department = (
        labelled_keys(folder) if args.labelled else ({p: folder.relative(p) for p in folder.photos}, [])
    )
    settings = stack.settings_with("bucket", aws=args.aws)
    prefix = settings.labelled_prefix if args.labelled else settings.incoming_prefix
    keys = {path: prefix + key for path, key in relative.items()}
    for path in not_in_a_department:
        print(f"skipped {path}: not in a department folder (DIR/<department>/photo)", file=sys.stderr)
    _note_skipped(folder.skipped)
    uploader = Uploader(PhotoBucket(settings))
    one_line_each = len(keys) <= PROGRESS_FROM
    with progress("uploading", len(keys)) as advance:
        for path, key in keys.items():
            sent = uploader.upload(path, key)
            advance()
            if one_line_each:
                print(f"{path} -> {uploader.bucket.uri(key)}" + ("" if sent else " (already there)"))
    left_out = len(folder.photos) - len(keys) + len(folder.skipped)
    line = f"{plural(len(keys) - uploader.unchanged, 'photo')} uploaded to {uploader.bucket.uri(prefix)}"
    if uploader.unchanged:
        line += f", {uploader.unchanged} already there with the same bytes"
    if left_out:
        line += f", {plural(left_out, 'other file')} skipped"
    print(line)
    return 0


def _batch(args: argparse.Namespace) -> int:
    """The nightly run, now: the template's state machine on the local stack, its workers in separate processes
    (:mod:`refund_sorter_cli.night`); with ``--aws``, an execution of the deployed state machine."""
    from refund_sorter_cli import stack
    from refund_sorter_cli.display import by_photo_name, print_results
    from refund_sorter_cli.night import NightOutcome, run_night_locally

    if args.aws:
        return _start_deployed_night()
    threshold = stack.settings(aws=False, function="PlanFunction").confidence_threshold

    def show(results: Sequence[Result]) -> None:  # in photo order: a run finishes photos in any order
        print_results(by_photo_name(results), threshold)

    outcome = run_night_locally(workers=args.workers, show_results=show, break_lease=args.break_lease)
    return {
        NightOutcome.SUCCEEDED: 0,
        NightOutcome.FAILED: EXIT_FAILED,
        NightOutcome.LEASE_HELD: EXIT_LEASE_HELD,
        NightOutcome.INTERRUPTED: EXIT_INTERRUPTED,
    }[outcome]


def _start_deployed_night() -> int:
    """``batch --aws``: start an execution of the deployed state machine now (the schedule's, with the same
    lease: if tonight's run is still going, this one ends at once) and say how to follow it."""
    import json
    import uuid
    from datetime import UTC, datetime

    import boto3

    arn = os.environ.get("REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN")
    if not arn:
        raise CommandError(
            "set REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN to the stack output NightlyStateMachineArn "
            "(aws cloudformation describe-stacks --stack-name <stack> --query "
            "\"Stacks[0].Outputs[?OutputKey=='NightlyStateMachineArn'].OutputValue\" --output text)"
        )
    name = f"cli-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    started = boto3.client("stepfunctions").start_execution(
        stateMachineArn=arn, name=name, input=json.dumps({"source": "refund-sorter.cli"})
    )
    execution = started["executionArn"]
    print(f"started {execution}")
    print(f"follow it: aws stepfunctions describe-execution --execution-arn {execution}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.storage.export import csv_lines
    from refund_sorter_cli import stack
    from refund_sorter_cli.display import plural

    if args.out is not None and args.out.is_dir():
        raise CommandError(f"--out {args.out} is a folder: name a file, e.g. {args.out / (args.date + '.csv')}")
    settings = stack.settings_with("table", aws=args.aws)
    lines = csv_lines(DynamoResultStore(settings.table).by_day(args.date))
    if args.out is None:
        sys.stdout.writelines(line.removeprefix("\ufeff") for line in lines)
        sys.stdout.flush()  # here, so a closed pipe is noticed inside main() rather than at exit
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", encoding="utf-8", newline="") as out:
            rows = sum(1 for line in lines if out.write(line)) - 1
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(f"{args.out} ({plural(rows, 'row')})")
    return 0


def _invoke(args: argparse.Namespace) -> int:
    """One function on one event: in this process on the local stack, ``lambda:Invoke`` with ``--aws``."""
    import json

    from refund_sorter_cli import stack

    try:
        event = json.loads(args.event.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"--event {args.event}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--event {args.event}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"--event {args.event} is not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(event, dict):
        raise CommandError(f"--event {args.event}: an event is a JSON object ({{...}}), not {type(event).__name__}")
    reply = stack.run_function(args.function, event, aws=args.aws, show_logs=True)
    print(json.dumps(reply, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
