"""``make demo``: the nightly job and the API on the embedded local stack, start to finish.

Runs the real CLI as a user would: starts ``refund-sorter local``, uploads the sample photos that ship in
wheels to ``incoming/``, runs the nightly state machine (the template's definition, its workers in separate
processes), exports the CSV, then classifies one photo by URL through the local API (served by a throwaway
HTTP server on 127.0.0.1), and stops everything it started.

Ports: ``REFUND_SORTER_MOTO_PORT`` / ``REFUND_SORTER_API_PORT`` (5000 and 3000 by default; 0: any free port).
The demo only ever talks to the stack it started: a port already taken (say, by a ``refund-sorter local`` of
your own) stops it at once with one line naming the port and how to pick another (exit 2), and it reads
the addresses to use from its own stack's banner, never from a probe that another program could answer.
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
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from refund_sorter_cli.local_stack import LocalPortInUseError, LocalPorts, LocalStackError
from refund_sorter_cli.net import HOST, PortInUseError, listen
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


# Long enough for a cold start on a busy machine; only reached when the stack is broken.
STACK_START_LIMIT = 180.0
EXIT_CANNOT_RUN = 2


def check_ports(ports: LocalPorts) -> None:
    """A port someone else listens on is an error now (:class:`LocalPortInUseError`), before anything starts."""
    for port, service in ((ports.moto_port, "moto"), (ports.api_port, "API")):
        if port == 0:
            continue
        try:
            listen(port).close()
        except PortInUseError:
            raise LocalPortInUseError(port, service) from None


def wait_for_banner(log: Path, stack: subprocess.Popen[bytes]) -> dict[str, str]:
    """The ``export NAME=value`` lines our own stack prints once both its servers listen; if it exits first, a
    :class:`LocalStackError` with the last line it said (a port taken meanwhile, say)."""
    deadline = time.monotonic() + STACK_START_LIMIT
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        if "export REFUND_SORTER_API_URL=" in text:
            exports = (line.removeprefix("export ") for line in text.splitlines() if line.startswith("export "))
            return dict(line.split("=", 1) for line in exports)
        if stack.poll() is not None:
            said = [line for line in text.splitlines() if line.strip()]
            raise LocalStackError(said[-1].removeprefix("refund-sorter local: ") if said else "the local stack stopped")
        if time.monotonic() > deadline:
            raise LocalStackError(f"the local stack printed no addresses within {STACK_START_LIMIT:.0f} s (see {log})")
        time.sleep(0.1)


def client_exports(log: Path) -> str:
    """The ``export …`` block ``refund-sorter local`` printed: what another shell needs."""
    lines = log.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if line.startswith(("export ", "# In another shell")))


def main(argv: list[str] | None = None) -> int:
    keep = wants_to_keep(argv)
    try:
        ports = LocalPorts.from_environment()
        check_ports(ports)
    except LocalStackError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    step("starting the local stack")
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "local-stack.log"
    stack = start_stack(log)
    photo_server = None
    api_url = ""
    try:
        try:
            environment = wait_for_banner(log, stack)
        except LocalStackError as exc:
            print(f"make demo: {exc}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        os.environ.update(environment)  # upload/batch/export below act on this stack, nothing else
        api_url = environment["REFUND_SORTER_API_URL"]
        print(f"moto on {environment['AWS_ENDPOINT_URL']}, API on {api_url}")

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
            print(f"Swagger UI:  {api_url}/swagger\n")
            print(client_exports(log))
            print(f"\nStop it with:  kill {stack.pid}")
    finally:
        if photo_server is not None:
            photo_server.shutdown()
            photo_server.server_close()
        if stack.poll() is None and not keep:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(timeout=30)
            step(f"stopped the local stack (its log: {log})")
    print(next_steps(api_url, keep=keep))
    return 0


def next_steps(api_url: str, *, keep: bool) -> str:
    """The demo's last lines: where to look at the photos waiting for a person, and how to sort your own."""
    review = f"{api_url}/review" if keep else f"{api_url}/review (while the stack runs: make demo KEEP=1)"
    return (
        f"\nNext:\n"
        f"  review the photos that need a person: {review}\n"
        f"  sort your own photos on this machine:  .venv/bin/refund-sorter classify DIR"
    )


if __name__ == "__main__":
    sys.exit(main())
