"""Shared fixtures. Tests build their odd images with Pillow; real photos come from wheels (tests/photos.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from refund_sorter.config import Settings, get_settings
from refund_sorter.vision.sorter import Sorter, get_sorter


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


CLOTHING = Path(__file__).parent / "fixtures" / "clothing"  # 4 departments x 12 CC0 photos (see its README)


@pytest.fixture(scope="session")
def clothing_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model version trained once per run with ``refund-sorter train`` on the clothing fixtures."""
    from refund_sorter_cli.commands import main

    out = tmp_path_factory.mktemp("clothing-head") / "version"
    assert main(["train", str(CLOTHING), "--out", str(out)]) == 0
    return out
