"""``make openapi``: write the API's OpenAPI document, generated from the code, to ``docs/openapi.json``.

``--check`` (run by ``make lint``, so CI) fails when the committed document is not what the code generates:
the document a client reads can then never drift from the routes, schemas and error policy it describes.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"


def generate() -> str:
    from refund_sorter.api.app import build_app

    return build_app().get_openapi_json_schema() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed document is out of date")
    args = parser.parse_args(argv)
    generated = generate()
    if not args.check:
        DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
        DOCUMENT.write_text(generated, encoding="utf-8")
        print(f"wrote {DOCUMENT.relative_to(ROOT)}")
        return 0
    committed = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
    if committed == generated:
        return 0
    diff = difflib.unified_diff(
        committed.splitlines(keepends=True),
        generated.splitlines(keepends=True),
        fromfile=f"{DOCUMENT.relative_to(ROOT)} (committed)",
        tofile="generated from the code",
        n=2,
    )
    sys.stdout.writelines(list(diff)[:80])
    print(f"\n{DOCUMENT.relative_to(ROOT)} is out of date with the API's code: run `make openapi` and commit it.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
