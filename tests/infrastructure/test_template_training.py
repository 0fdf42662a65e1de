"""The template's part of training on the stack: the training layer and function, the embed-on-arrival
function, and the optional schedule (what each function may call is checked in test_permissions)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infrastructure.test_template import TEMPLATE_PATH, load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(template["Resources"])


def test_training_runs_on_its_own_layer_without_the_model(resources: dict[str, dict[str, Any]]) -> None:
    layer = resources["TrainLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "../layers/train"
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    function = resources["TrainFunction"]["Properties"]
    # one layer: scikit-learn's; the model layer would put function + layers over Lambda's 250 MB
    assert function["Layers"] == [{"Ref": "TrainLayer"}]
    assert function["Timeout"] == 900


def test_labelled_photos_are_embedded_as_they_arrive(resources: dict[str, dict[str, Any]]) -> None:
    function = resources["EmbedLabelledFunction"]
    assert "Condition" not in function  # always there: training reads what it records
    (event,) = function["Properties"]["Events"].values()
    assert event["Type"] == "S3" and event["Properties"]["Bucket"] == {"Ref": "ImagesBucket"}
    assert event["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "labelled/"}]
    assert function["Properties"]["Layers"] == [{"Ref": "ModelLayer"}]


def test_the_training_schedule_is_off_unless_a_parameter_says_when(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    parameter = template["Parameters"]["TrainingSchedule"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    for good in ("", "cron(0 4 ? * SUN *)", "rate(7 days)"):
        assert pattern.fullmatch(good), good
    for bad in ("0 4 * * 0", "cron(0 4 * * 0)", "rate(0 days)"):
        assert not pattern.fullmatch(bad), bad
    assert template["Conditions"]["TrainingScheduled"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "TrainingSchedule"}, ""]}]
    }
    (schedule,) = resources["TrainFunction"]["Properties"]["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["State"] == {"Fn::If": ["TrainingScheduled", "ENABLED", "DISABLED"]}
    assert '"activate": false' in schedule["Properties"]["Input"]  # a person activates a scheduled version


def test_the_cli_can_find_the_deployed_functions(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["TrainFunctionName"]["Value"] == {"Ref": "TrainFunction"}
    assert outputs["EmbedLabelledFunctionName"]["Value"] == {"Ref": "EmbedLabelledFunction"}
