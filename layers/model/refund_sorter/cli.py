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

    from refund_sorter.results import Result


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
    return parser


def _classify(args: argparse.Namespace) -> int:
    from refund_sorter.pipeline import get_sorter
    from refund_sorter.sources import is_url, photo_from_path, photo_from_url

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
            results.append(sorter._failed(outcome.photo, error))
        else:
            results.append(outcome.result)
        if args.json:
            print(results[-1].model_dump_json(), flush=True)
    if not args.json:
        print_results(results)
    return 1 if any(r.status == "failed" for r in results) else 0


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
    table = Table("photo", "status", "department", "confidence", "top label", "why not")
    for r in results:
        table.add_row(
            Path(r.source).name if "://" not in r.source else r.source,
            r.status,
            r.prediction or "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            f"{r.label} {r.label_confidence:.2f}" if r.label and r.label_confidence is not None else "",
            f"{r.error.code}: {r.error.message}" if r.error else "",
        )
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
