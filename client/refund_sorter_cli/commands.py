"""``refund-sorter``: classify photos locally, run the embedded stack, drive a deployed or local stack.

Commands that talk to AWS use whatever endpoint ``AWS_ENDPOINT_URL`` names (the local stack in dev).

Exit status: 0 done; 1 some photos failed (``classify``) or AWS refused a call; 2 the command cannot run as
asked (bad arguments, a missing folder, the local stack not running, a port taken); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from refund_sorter.config import Settings
    from refund_sorter.photos import Photo
    from refund_sorter.results import Result
    from refund_sorter_cli.photo_files import Skipped
    from refund_sorter_cli.template import Template

EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2
EXIT_INTERRUPTED = 130


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
        # `refund-sorter export | head`: the reader has gone, which is not our error. Point stdout at
        # /dev/null so the interpreter's final flush does not complain (Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # the expected ones become one line; anything else is a bug and re-raises
        message = _one_line(exc)
        if message is None:
            raise
        print(f"refund-sorter {args.command}: {message}", file=sys.stderr)
        return EXIT_FAILED if _is_aws_refusal(exc) else EXIT_CANNOT_RUN


def _one_line(exc: Exception) -> str | None:
    """The one-line explanation of an error a person can act on, or ``None`` for a real bug."""
    from botocore.exceptions import BotoCoreError, ClientError

    from refund_sorter.errors import RefundSorterError
    from refund_sorter_cli.local_stack import LocalStackError
    from refund_sorter_cli.photo_files import FolderError

    if isinstance(exc, (CommandError, LocalStackError, FolderError)):
        return str(exc)
    if isinstance(exc, RefundSorterError):
        return exc.message
    if isinstance(exc, (ClientError, BotoCoreError)):
        return f"AWS refused: {exc}"
    return None


def _is_aws_refusal(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    from refund_sorter.errors import RefundSorterError

    return isinstance(exc, (ClientError, BotoCoreError, RefundSorterError))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refund-sorter", description=__doc__.splitlines()[0])
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

    upload = commands.add_parser("upload", help="upload a folder's photos to the bucket's incoming/")
    upload.add_argument("folder", type=Path, metavar="DIR")
    upload.set_defaults(run=_upload)

    batch = commands.add_parser("batch", help="run the nightly state machine now, with a progress bar")
    batch.add_argument("--workers", type=int, metavar="N", help="worker processes at once (default: one per CPU)")
    batch.set_defaults(run=_batch)

    export = commands.add_parser("export", help="a day's results as CSV")
    export.add_argument(
        "--date", type=_day, default="today", metavar="DAY", help="YYYY-MM-DD, today (the default) or yesterday (UTC)"
    )
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of standard output")
    export.set_defaults(run=_export)

    invoke = commands.add_parser("invoke", help="run a function's handler with an event, like sam local invoke")
    invoke.add_argument("function", metavar="FUNCTION", help="the template's logical id, e.g. PlanFunction")
    invoke.add_argument("--event", type=Path, required=True, metavar="FILE")
    invoke.set_defaults(run=_invoke)
    for command in (upload, batch, export, invoke):
        command.add_argument(
            "--aws", action="store_true", help="act on AWS (REFUND_SORTER_BUCKET/TABLE from the stack outputs)"
        )
    from refund_sorter_cli import training

    training.register(commands)  # train, models
    return parser


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
    from refund_sorter_cli.display import print_results, progress, summary
    from refund_sorter_cli.training import sorter_with_head

    sorter = sorter_with_head(args.head)
    photos = _photos_to_classify(args.inputs, sorter.settings)
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
        print_results(results, sorter.settings.confidence_threshold)
        print(summary(results))
    return EXIT_FAILED if any(r.status == "failed" for r in results) else 0


def _photos_to_classify(inputs: Sequence[str], settings: Settings) -> list[Photo]:
    """URLs, files and the photos inside folders, in the order given (a folder's photos sorted by path).

    A file that does not exist stays in the list: it becomes a ``failed`` Result (``not_found``), like any
    other input that cannot be read.
    """
    from refund_sorter.sources.files import is_url, photo_from_path, photo_from_url
    from refund_sorter_cli.photo_files import find_photos

    photos = []
    for item in inputs:
        if is_url(item):
            photos.append(photo_from_url(item, settings))
        elif Path(item).is_dir():
            folder = find_photos(Path(item))
            _note_skipped(folder.skipped)
            if not folder.photos:
                print(f"note: no photos in {item}", file=sys.stderr)
            photos += [photo_from_path(path, settings) for path in folder.photos]
        else:
            photos.append(photo_from_path(Path(item), settings))
    return photos


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


def _aws_context(args: argparse.Namespace, function: str = "PredictFunction") -> Template:
    """Where upload/batch/export/invoke act: the local stack with the template's environment by default; with
    ``--aws``, real AWS as the environment's credentials, region and REFUND_SORTER_* variables say.

    A local endpoint gets one quick TCP connect first: if nothing listens, say so now rather than after
    botocore's retries end in a traceback.
    """
    from refund_sorter_cli.local_stack import apply_function_environment, use_local_aws
    from refund_sorter_cli.net import is_listening, is_loopback_url
    from refund_sorter_cli.template import Template

    template = Template()
    if not args.aws:
        use_local_aws()
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        if is_loopback_url(endpoint) and not is_listening(endpoint):
            raise CommandError(
                f"the local stack is not running at {endpoint}: start it with `refund-sorter local` "
                "in another terminal (or set AWS_ENDPOINT_URL, or add --aws for the deployed stack)"
            )
        apply_function_environment(template, function)
    return template


# --- upload, batch, export, invoke -----------------------------------------------------------------------------


def _upload(args: argparse.Namespace) -> int:
    from refund_sorter.config import get_settings
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter_cli.display import PROGRESS_FROM, progress
    from refund_sorter_cli.photo_files import find_photos

    folder = find_photos(args.folder)  # before anything else: a wrong folder needs no stack to say so
    _aws_context(args)
    _note_skipped(folder.skipped)
    bucket = PhotoBucket(get_settings())
    one_line_each = len(folder.photos) <= PROGRESS_FROM
    with progress("uploading", len(folder.photos)) as advance:
        for path in folder.photos:
            key = bucket.settings.incoming_prefix + folder.relative(path)
            bucket.client.upload_file(str(path), bucket.name, key)
            advance()
            if one_line_each:
                print(f"{path} -> {bucket.uri(key)}")
    skipped = f", {len(folder.skipped)} other files skipped" if folder.skipped else ""
    print(f"{len(folder.photos)} photos uploaded to {bucket.uri(bucket.settings.incoming_prefix)}{skipped}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    """The nightly run, now: the template's state machine on the local stack, its workers in separate processes
    (:mod:`refund_sorter_cli.night`); with ``--aws``, an execution of the deployed state machine."""
    from refund_sorter.config import get_settings
    from refund_sorter_cli.display import by_photo_name, print_results
    from refund_sorter_cli.night import run_night_locally

    if args.aws:
        return _start_deployed_night()
    _aws_context(args)  # the local stack, with the template's environment; says so if it is not running
    threshold = get_settings().confidence_threshold

    def show(results: Sequence[Result]) -> None:  # in photo order: a run finishes photos in any order
        print_results(by_photo_name(results), threshold)

    return run_night_locally(workers=args.workers, show_results=show)


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
    from refund_sorter.config import get_settings
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.storage.export import csv_lines

    _aws_context(args)
    lines = csv_lines(DynamoResultStore(get_settings().table).by_day(args.date))
    if args.out is None:
        sys.stdout.writelines(line.removeprefix("\ufeff") for line in lines)
        sys.stdout.flush()  # here, so a closed pipe is noticed inside main() rather than at exit
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


if __name__ == "__main__":
    sys.exit(main())
