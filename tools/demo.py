"""``make demo``: the nightly job and the API on the embedded local stack, start to finish.

Runs the real CLI as a user would: starts ``refund-sorter local``, uploads the sample photos that ship in
wheels to ``incoming/``, runs the nightly state machine (the template's definition, its workers in separate
processes), exports the CSV, then classifies one photo by URL through the local API (served by a throwaway
HTTP server on 127.0.0.1), and stops everything it started.
"""

from __future__ import annotations

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

from refund_sorter_cli.local_stack import API_PORT, HOST, MOTO_PORT, wait_for_port
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


def main() -> int:
    environment = os.environ | {"AWS_ENDPOINT_URL": f"http://{HOST}:{MOTO_PORT}"}
    os.environ.update(environment)
    step(f"starting the local stack: moto on {HOST}:{MOTO_PORT}, API on {HOST}:{API_PORT}")
    OUT.mkdir(parents=True, exist_ok=True)
    stack_log = (OUT / "local-stack.log").open("w")  # the functions' JSON logs, as `sam local` would print them
    stack = subprocess.Popen([str(CLI), "local"], start_new_session=True, stdout=stack_log, stderr=subprocess.STDOUT)
    photo_server = None
    try:
        wait_for_port(f"http://{HOST}:{MOTO_PORT}", timeout=60)
        wait_for_port(f"http://{HOST}:{API_PORT}", timeout=60)

        step("uploading the sample photos (and one broken upload) to incoming/")
        run("upload", str(prepare_photos()))

        # Chunks of four, so that the sample night shows the fan-out: two worker processes, several chunks.
        step("running the nightly state machine: plan → workers over chunks of photos (Distributed Map) → export")
        run("batch", "--workers", "2", env={"REFUND_SORTER_CHUNK_SIZE": "4"})

        today = datetime.now(UTC).date().isoformat()
        step("exporting today's CSV")
        run("export", "--date", today, "--out", str(OUT / f"{today}.csv"))

        step("classifying a photo by URL through the local API")
        photo_server, url = serve_one_photo()
        request = urllib.request.Request(
            f"http://{HOST}:{API_PORT}/predictions",
            data=json.dumps({"url": url}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
            print(f"POST /predictions {{url: {url}}} -> {response.status}")
        print(json.dumps({k: body[k] for k in ("id", "status", "prediction", "confidence", "label")}, indent=2))
        print(
            f"\nCSV: {OUT / f'{today}.csv'}   Swagger UI (while `refund-sorter local` runs): http://{HOST}:{API_PORT}/swagger"
        )
        return 0
    finally:
        if photo_server is not None:
            photo_server.shutdown()
            photo_server.server_close()
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(timeout=30)
        stack_log.close()
        step(f"stopped the local stack (its log: {stack_log.name})")


if __name__ == "__main__":
    sys.exit(main())
