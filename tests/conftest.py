"""Shared fixtures. Tests build their odd images with Pillow; real photos come from wheels (refund_sorter_cli.samples).

Tiers, by what they need: ``unit/`` nothing but the package (and the real model), ``functional/`` real
processes and servers on 127.0.0.1 but no AWS, ``integration/`` the local stack (moto), ``infrastructure/``
the template. The one local stack for the whole run is ``local_stack`` in ``integration/conftest.py``.

Each test is marked with its tier by its directory here (so nobody forgets): ``pytest -m unit``, ``-m "not
integration"``; ``browser`` (Debian's Chromium) and ``slow`` are marked where they apply. The markers are
registered in pyproject.toml (``--strict-markers``).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from refund_sorter.config import Settings, get_settings
from refund_sorter.vision.sorter import Sorter, get_sorter
from refund_sorter_cli.net import HOST
from refund_sorter_cli.samples import photo_path
from tests import chromium

TESTS = Path(__file__).parent
TIERS = ("unit", "functional", "integration", "infrastructure")


def tier_of(path: Path) -> str:
    """The tier a test file belongs to: the directory under tests/ it is in."""
    tier = path.relative_to(TESTS).parts[0]
    if tier not in TIERS:
        raise pytest.UsageError(f"{path}: a test belongs in one of tests/{{{','.join(TIERS)}}}/, by what it needs")
    return tier


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier_of(item.path))


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures start anything for a test that cannot run
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser") is not None:
        chromium.require()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings are read once per process; a test that changes the environment must see its change."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def sorter() -> Sorter:
    """One Sorter (one onnxruntime session) for the whole run, with the default settings."""
    return get_sorter()


@pytest.fixture
def settings() -> Settings:
    return Settings()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def photo_server() -> Iterator[str]:
    """Serves the wheel photos (coffee.png, chelsea.png, …) on 127.0.0.1, on a port the OS chooses."""
    folder = photo_path("skimage/coffee").parent
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


CLOTHING = TESTS / "fixtures" / "clothing"  # 4 departments x 12 CC0 photos (see its README)


@pytest.fixture(scope="session")
def clothing_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model version trained once per run with ``refund-sorter train`` on the clothing fixtures."""
    from refund_sorter_cli.commands import main

    out = tmp_path_factory.mktemp("clothing-head") / "version"
    assert main(["train", str(CLOTHING), "--out", str(out)]) == 0
    return out
