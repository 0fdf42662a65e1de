"""The loop benchmark's simulation (bench/loop.py) on synthetic features: no ../shared, no model, a few seconds."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import numpy as np
import pytest

from bench import loop as bench_loop
from bench.loop import Loop, Photos, averaged, oldest, product_orders, simulate

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DEPARTMENTS = ("hat", "pants", "shoes", "t-shirt")


def synthetic(photos_per_department: int, seed: int) -> Photos:
    """Four departments as overlapping clusters in 1280 features (the backbone's width), so a head is unsure of
    some photos; a few photos have a high not-a-product probability."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (len(DEPARTMENTS), 1280))
    labels = np.repeat(np.array(DEPARTMENTS), photos_per_department)
    features = centres[np.repeat(np.arange(len(DEPARTMENTS)), photos_per_department)]
    features = features + rng.normal(0.0, 6.0, features.shape)
    not_a_product = np.where(rng.random(len(labels)) < 0.03, 0.9, 0.01)
    return Photos(features.astype(np.float32), labels, not_a_product)


LOOP = Loop(nights=3, budget=8, backbone="synthetic", target_precision=0.98, gate=0.5)


@pytest.fixture(scope="module")
def photos() -> tuple[Photos, Photos]:
    return synthetic(60, seed=1), synthetic(25, seed=1)


def test_every_night_spends_at_most_the_budget_and_measures_the_active_head(photos: tuple[Photos, Photos]) -> None:
    arriving, measuring = photos
    # WHEN the loop runs three nights in the oldest-first order
    asked: list[list[int]] = []

    def recording_oldest(arrival: int, top: Sequence[tuple[str, float]], taught: Mapping[str, int], rng: Any) -> float:
        # THEN every queued photo comes with the Result's top departments (best first) and the head's taught counts
        assert [d for d, _ in top] and sorted(top, key=lambda t: -t[1]) == top and set(taught) == set(DEPARTMENTS)
        asked.append([arrival])
        return oldest(arrival, top, taught, rng)

    rows = simulate(LOOP, arriving, measuring, recording_oldest, seed=0)
    # THEN one row a night, labels start at 10 a department and grow by at most the budget, never past the queue
    assert [r["night"] for r in rows] == [1, 2, 3]
    spent = [40] + [r["labels"] for r in rows]
    assert all(0 <= b - a <= LOOP.budget for a, b in itertools.pairwise(spent))
    assert all(r["asked"] == b - a for r, a, b in zip(rows, spent, spent[1:], strict=False))
    for r in rows:
        assert 0.0 <= r["auto_share"] <= 1.0 and 0.0 <= r["top1"] <= 1.0
        assert r["precision"] is None or 0.0 <= r["precision"] <= 1.0
        assert isinstance(r["promoted"], bool) and r["reason"]
    # AND the queue held the photos the head did not sort: fewer than arrived (the head sorted some itself)
    assert 0 < len(asked) < len(arriving) - 40


def test_the_queue_asks_in_the_orders_key_and_only_about_photos_sent_to_review(photos: tuple[Photos, Photos]) -> None:
    arriving, measuring = photos
    keys: list[float] = []

    def key_recorder(arrival: int, top: Sequence[tuple[str, float]], taught: Mapping[str, int], rng: Any) -> float:
        key = top[0][1] - top[1][1]
        keys.append(key)
        return key

    rows = simulate(
        Loop(nights=1, budget=5, backbone="s", target_precision=0.98, gate=0.5),
        arriving,
        measuring,
        key_recorder,
        seed=0,
    )
    # THEN the night's five answers were the five smallest keys among the photos queued, the rest wait
    assert rows[0]["asked"] == 5 and rows[0]["queued"] == len(keys) - 5 > 0
    assert rows[0]["last_asked_key"] == sorted(keys)[4] <= rows[0]["first_waiting_key"] == sorted(keys)[5]
    # AND only photos the head did not sort were queued: those under its threshold or caught by the gate
    assert len(keys) < len(arriving) - 40


def test_same_seed_same_run_and_orders_share_the_starting_photos(photos: tuple[Photos, Photos]) -> None:
    arriving, measuring = photos
    orders = product_orders()
    first = simulate(LOOP, arriving, measuring, orders["random"], seed=3)
    again = simulate(LOOP, arriving, measuring, orders["random"], seed=3)
    assert first == again
    informative = simulate(LOOP, arriving, measuring, orders["informative"], seed=3)
    # the same starting head: what the first night classifies and queues is the same, only the order differs
    assert informative[0]["queued"] + informative[0]["asked"] == first[0]["queued"] + first[0]["asked"]
    rows = averaged([first, informative])
    assert [r["night"] for r in rows] == [1, 2, 3]
    assert rows[0]["auto_share_min"] <= rows[0]["auto_share"] <= rows[0]["auto_share_max"]


def test_without_the_dataset_it_says_so_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = bench_loop.RESULTS_JSON.read_bytes() if bench_loop.RESULTS_JSON.is_file() else None
    assert bench_loop.main(["--datasets", str(tmp_path)]) == 0
    assert "no dataset at" in capsys.readouterr().out
    after = bench_loop.RESULTS_JSON.read_bytes() if bench_loop.RESULTS_JSON.is_file() else None
    assert after == before  # the committed results are left alone


def test_the_reports_keep_the_contracts_shape(
    photos: tuple[Photos, Photos], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two short runs of every product order and a ceiling
    arriving, measuring = photos
    runs = {name: [simulate(LOOP, arriving, measuring, order, seed=s) for s in (0, 1)] for name, order in
            product_orders().items()}  # fmt: skip
    curves = {name: averaged(r) for name, r in runs.items()}
    full = bench_loop.measure(bench_loop.fit_head(LOOP, arriving, seed=0), measuring, LOOP.target_precision)
    details = {
        "dataset": "synthetic", "backbone": "synthetic", "train_photos": len(arriving),
        "validation_photos": len(measuring), "nights": LOOP.nights, "budget_per_night": LOOP.budget,
        "start_per_department": 10, "held_out_fraction": 0.2, "target_precision": 0.98, "seeds": 2,
        "full_data": full, "what_if_every_challenger_activated": {"seeds": 2, "runs": runs},
        "choice": {"measured_on": "synthetic", "seeds": 2, "curves": curves, "runs": runs},
        "curves": curves, "runs": runs, "runs_total": 12, "seconds": 1, "load_average_1_5_15_min": [0, 0, 0], "cpus": 2,
        "control": {"rule": bench_loop.THRESHOLD_RULES["control"], "runs": runs},
        "threshold_rule": {"shipped": bench_loop.SHIPPED_RULE, **bench_loop.THRESHOLD_RULES[bench_loop.SHIPPED_RULE]},
        "threshold_choice": {"measured_on": "synthetic", "rules": {}, "runs": {"control": runs["informative"]}},
    }  # fmt: skip
    for name in ("RESULTS_JSON", "RESULTS_MD", "CHART"):
        monkeypatch.setattr(bench_loop, name, tmp_path / getattr(bench_loop, name).name)
    # WHEN the reports are written
    bench_loop.write_reports(details)
    # THEN loop.json has exactly design.md §10's keys, one row a night per order
    written = json.loads((tmp_path / "loop.json").read_text(encoding="utf-8"))
    assert set(written) == {"budget_per_night", "full_data", "orders"}
    assert set(written["full_data"]) == {"auto_share", "precision", "top1"}
    assert set(written["orders"]) == {"informative", "oldest", "random"}
    for rows in written["orders"].values():
        assert [r["night"] for r in rows] == [1, 2, 3]
        assert all(set(r) == {"night", "labels", "auto_share", "precision", "top1"} for r in rows)
    # AND the chart is an SVG with one line per order, the markdown states both aims' verdicts
    svg = ElementTree.parse(tmp_path / "loop.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    markdown = (tmp_path / "loop.md").read_text(encoding="utf-8")
    assert "**Aim 1**" in markdown and "**Aim 2**" in markdown and "](loop.svg)" in markdown
    assert "## What the promotion rule costs" in markdown and "## Reading the numbers" in markdown
    # AND the threshold rule's control comparison (validation/) and its choice (train/) are there
    assert "## The threshold rule: control against shipped (validation/)" in markdown
    assert "## Choosing the threshold rule (on `train/` only)" in markdown


def test_spot_checks_are_asked_first_and_not_counted_as_sorted(photos: tuple[Photos, Photos]) -> None:
    arriving, measuring = photos
    checked = dataclasses.replace(LOOP, threshold_rule="ordinary", spot_check_share=0.25)
    # WHEN a quarter of each night's photos are spot checks and the labelled photos and spot checks set the threshold
    rows = simulate(checked, arriving, measuring, oldest, seed=0)
    plain = simulate(dataclasses.replace(LOOP, threshold_rule="ordinary"), arriving, measuring, oldest, seed=0)
    # THEN the spot checks come out of the same budget, first (their key is before any order's)
    assert all(0 < r["spot_checks"] <= r["asked"] <= LOOP.budget for r in rows)
    assert all(r["last_asked_key"] is not None for r in rows) and rows[0]["spot_checks"] <= rows[0]["asked"]
    assert all(r["spot_checks"] == 0 for r in plain)
    # AND what is spot-checked is not counted as sorted without a person: a head sorts 3/4 of its share
    head = bench_loop.fit_head(checked, arriving, seed=0)
    everything = bench_loop.measure(head, measuring, 0.98)["auto_share"]
    assert everything and bench_loop.measure(head, measuring, 0.98, 0.25)["auto_share"] == pytest.approx(
        0.75 * everything, abs=1e-4
    )
