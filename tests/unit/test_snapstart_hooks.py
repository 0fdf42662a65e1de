"""SnapStart hook registration: with Lambda's registry it registers both hooks; without it, nothing happens."""

from __future__ import annotations

import sys

import pytest
import snapshot_restore_py

from refund_sorter.api import snapstart


def test_without_the_runtime_module_nothing_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a machine without Lambda's snapshot_restore_py (None in sys.modules makes its import fail)
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)
    # THEN registering says so, and the handler module still imports and serves as a function without SnapStart
    assert snapstart.register_snapstart_hooks() is False


def test_with_the_runtime_module_both_hooks_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    assert snapstart.register_snapstart_hooks() is True
    assert snapshot_restore_py.get_before_snapshot() == [(snapstart.prepare_snapshot, (), {})]
    assert snapshot_restore_py.get_after_restore() == [(snapstart.refresh_after_restore, (), {})]
