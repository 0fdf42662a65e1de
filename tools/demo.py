"""``make demo``: the nightly job and the API on the embedded local stack, start to finish.

Runs the real CLI as a user would: starts ``refund-sorter local``, uploads the sample photos that ship in
wheels to ``incoming/``, runs the nightly state machine (the template's definition, its workers in separate
processes), exports the CSV, then classifies one photo by URL through the local API (served by a throwaway
HTTP server on 127.0.0.1), and stops everything it started.

Ports: ``REFUND_SORTER_MOTO_PORT`` / ``REFUND_SORTER_API_PORT`` (5000 and 3000 by default).
``make demo KEEP=1`` (or ``DEMO_KEEP=1``, or ``--keep``) leaves the stack running at the end, to look
around in Swagger UI, the review page or with the AWS CLI.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from refund_sorter_cli.local_stack import LocalPorts
from refund_sorter_cli.net import HOST, wait_for_port
from refund_sorter_cli.samples import PHOTOS, photo_path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "demo"
CLI = Path(sys.executable).with_name("refund-sorter")


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(CLI), *args], check=True, env=os.environ | (env or {}))


def prepare_photos() -> Path:
    photos = OUT / "photos"
    shutil.rmtree(photos, ignore_errors=True)
    photos.mkdir(parents=True)
    for name in PHOTOS:
        source = photo_path(name)
        shutil.copyfile(source, photos / f"{name.replace('/', '-')}{source.suffix}")
    (photos / "scanner-glitch.jpg").write_bytes(b"\xff\xd8\xff\xe0 this upload was cut off")  # to show a failure
    return photos


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_one_photo() -> tuple[http.server.ThreadingHTTPServer, str]:
    folder = photo_path("skimage/coffee").parent
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{HOST}:{server.server_address[1]}/coffee.png"


def wants_to_keep(argv: list[str] | None = None) -> bool:
    """``--keep``, or ``KEEP=1`` / ``DEMO_KEEP=1`` (make passes ``make demo KEEP=1`` on as a variable)."""
    parser = argparse.ArgumentParser(prog="make demo", description="the local stack, start to finish")
    parser.add_argument("--keep", action="store_true", help="leave the local stack running at the end")
    keep = parser.parse_args(argv).keep
    return keep or any(os.environ.get(name, "").lower() in {"1", "true", "yes"} for name in ("KEEP", "DEMO_KEEP"))


def start_stack(log: Path) -> subprocess.Popen[bytes]:
    """``refund-sorter local`` in its own session (so ``--keep`` can outlive us), its output in ``log``."""
    with log.open("w") as out:  # the functions' JSON logs, as `sam local` would print them
        return subprocess.Popen([str(CLI), "local"], start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def client_exports(log: Path) -> str:
    """The ``export …`` block ``refund-sorter local`` printed: what another shell needs."""
    lines = log.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if line.startswith(("export ", "# In another shell")))


def main(argv: list[str] | None = None) -> int:
    keep = wants_to_keep(argv)
    ports = LocalPorts.from_environment()
    moto_url, api_url = f"http://{HOST}:{ports.moto_port}", f"http://{HOST}:{ports.api_port}"
    os.environ["AWS_ENDPOINT_URL"] = moto_url  # upload/batch/export below act on this stack, nothing else
    step(f"starting the local stack: moto on {moto_url}, API on {api_url}")
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "local-stack.log"
    stack = start_stack(log)
    photo_server = None
    try:
        try:
            for url in (moto_url, api_url):
                wait_for_port(url, timeout=120, still_starting=lambda: stack.poll() is None)
        except ConnectionRefusedError:
            print(log.read_text(encoding="utf-8").strip(), file=sys.stderr)  # the stack said why it stopped
            return 2

        step("uploading the sample photos (and one broken upload) to incoming/")
        run("upload", str(prepare_photos()))

        # Chunks of four, so that the sample night shows the fan-out: two worker processes, several chunks.
        step("running the nightly state machine: plan → workers over chunks of photos (Distributed Map) → export")
        run("batch", "--workers", "2", env={"REFUND_SORTER_CHUNK_SIZE": "4"})

        today = datetime.now(UTC).date().isoformat()
        step("exporting today's CSV")
        run("export", "--date", "today", "--out", str(OUT / f"{today}.csv"))

        step("classifying a photo by URL through the local API")
        photo_server, url = serve_one_photo()
        request = urllib.request.Request(
            f"{api_url}/predictions",
            data=json.dumps({"url": url}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
            print(f"POST /predictions {{url: {url}}} -> {response.status}")
        print(json.dumps({k: body[k] for k in ("id", "status", "prediction", "confidence", "label")}, indent=2))
        print(f"\nCSV: {OUT / f'{today}.csv'}")
        if keep:
            step(f"the local stack keeps running (pid {stack.pid}; its log: {log})")
            print(f"Swagger UI:  {api_url}/swagger\nReview page: {api_url}/review\n")
            print(client_exports(log))
            print(f"\nStop it with:  kill {stack.pid}")
        else:
            print(f"Swagger UI (while `refund-sorter local` runs): {api_url}/swagger   (make demo KEEP=1 keeps it)")
        return 0
    finally:
        if photo_server is not None:
            photo_server.shutdown()
            photo_server.server_close()
        if stack.poll() is None and not keep:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(timeout=30)
            step(f"stopped the local stack (its log: {log})")


if __name__ == "__main__":
    sys.exit(main())
