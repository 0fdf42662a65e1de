"""The learning loop in the template: the dashboard and the drop alarm read metrics the code really publishes,
and the retraining and promotion parameters reach the training function's settings."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from refund_sorter.config import Settings
from refund_sorter.jobs.summary import NightSummary
from refund_sorter_cli.local_stack import load_handler
from refund_sorter_cli.template import Template
from tests.infrastructure.test_template import TEMPLATE_PATH, load_template

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "RefundSorter"


@pytest.fixture(scope="module")
def template_document() -> dict[str, Any]:
    return load_template(Path(TEMPLATE_PATH))


@pytest.fixture(scope="module")
def resources(template_document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = template_document["Resources"]
    return resources


def dashboard(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    body = resources["LoopDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    document: dict[str, Any] = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))
    return document


def published_metrics() -> set[str]:
    """Every metric name a handler adds (Powertools add_metric / single_metric, literal names)."""
    names = set()
    for handler in (ROOT / "functions").rglob("*_handler.py"):
        names |= set(re.findall(r'name="([A-Za-z]+)"', handler.read_text(encoding="utf-8")))
    return names


def test_the_dashboard_draws_the_loop_from_metrics_the_code_publishes(resources: dict[str, dict[str, Any]]) -> None:
    widgets = dashboard(resources)["widgets"]
    titles = " | ".join(w["properties"]["title"] for w in widgets)
    for subject in ("Sorted without a person", "Review backlog", "Decisions per day", "Promotions"):
        assert subject in titles
    drawn = {
        line[1]
        for w in widgets
        if w["type"] == "metric"
        for line in w["properties"]["metrics"]
        if isinstance(line[0], str)
    }
    assert drawn == {"AutoSortedShare", "ReviewRate", "ReviewBacklog", "DecisionsMade", "VersionsTrained",
                     "VersionsActivated"}  # fmt: skip
    assert drawn | {"PhotosByModelVersion"} <= published_metrics()
    assert all(line[0] == NAMESPACE for w in widgets if w["type"] == "metric" for line in w["properties"]["metrics"]
               if isinstance(line[0], str))  # fmt: skip


def test_the_drop_alarm_watches_the_share_against_its_own_recent_band(resources: dict[str, dict[str, Any]]) -> None:
    detector = resources["AutoSortedShareAnomalyDetector"]["Properties"]["SingleMetricAnomalyDetector"]
    assert (detector["Namespace"], detector["MetricName"], detector["Stat"]) == (
        NAMESPACE,
        "AutoSortedShare",
        "Average",
    )
    alarm = resources["AutoSortedShareDropAlarm"]["Properties"]
    assert alarm["ComparisonOperator"] == "LessThanLowerThreshold"  # a drop, not a rise
    share, band = alarm["Metrics"]
    assert share["MetricStat"]["Metric"] == {
        "Namespace": NAMESPACE,
        "MetricName": "AutoSortedShare",
        "Dimensions": detector["Dimensions"],
    }
    assert share["MetricStat"]["Period"] == 86400  # one value a night
    assert (
        band["Expression"] == f"ANOMALY_DETECTION_BAND({share['Id']}, 2)" and alarm["ThresholdMetricId"] == band["Id"]
    )
    assert alarm["TreatMissingData"] == "notBreaching"


def test_the_loop_parameters_reach_the_training_settings(template_document: dict[str, Any]) -> None:
    variables = template_document["Resources"]["TrainFunction"]["Properties"]["Environment"]["Variables"]
    expected = {
        "REFUND_SORTER_RETRAIN_MIN_DECISIONS": "RetrainMinDecisions",
        "REFUND_SORTER_AUTO_ACTIVATE": "AutoActivate",
        "REFUND_SORTER_PROMOTION_MIN_PRECISION_DELTA": "PromotionMinPrecisionDelta",
        "REFUND_SORTER_PROMOTION_MIN_SHARE_DELTA": "PromotionMinShareDelta",
    }
    assert {name: variables[name] for name in expected} == {name: {"Ref": p} for name, p in expected.items()}
    parameters = template_document["Parameters"]
    defaults = {
        name.removeprefix("REFUND_SORTER_").lower(): str(parameters[p]["Default"]) for name, p in expected.items()
    }
    settings = Settings.model_validate(defaults)  # the template's defaults are valid settings
    assert (settings.retrain_min_decisions, settings.auto_activate) == (20, True)


def test_a_night_publishes_the_share_the_review_rate_the_backlog_and_photos_per_version(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "refund-sorter")
    load_handler(Template(), "ExportFunction")  # imports functions/batch/export_handler.py as Lambda would
    export_handler: Any = sys.modules["export_handler"]

    night = NightSummary(run="r", day="2026-12-04", auto_sorted_share=0.75, review_rate=0.25, review_backlog=12)
    night.model_versions = {"lite0": 30, "lite0+head-v2": 90}
    capsys.readouterr()
    export_handler.publish_loop_metrics(night)
    export_handler.metrics.flush_metrics()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    values = {name: blob[name] for blob in blobs for name in blob if not name.startswith("_") and name[0].isupper()}
    assert values["AutoSortedShare"] == [75.0] and values["ReviewRate"] == [25.0] and values["ReviewBacklog"] == [12.0]
    per_version = {blob["ModelVersion"]: blob["PhotosByModelVersion"] for blob in blobs if "ModelVersion" in blob}
    assert per_version == {"lite0": [30.0], "lite0+head-v2": [90.0]}
    assert all(blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE for blob in blobs)
