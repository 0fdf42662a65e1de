"""The API function's SnapStart: on by default behind a parameter, on published versions behind the alias."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infrastructure.test_template import TEMPLATE_PATH, load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def test_snapstart_is_a_parameter_on_by_default(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["PredictSnapStart"]
    assert parameter["Default"] == "true"
    assert set(parameter["AllowedValues"]) == {"true", "false"}
    assert template["Conditions"]["PredictSnapStartEnabled"] == {"Fn::Equals": [{"Ref": "PredictSnapStart"}, "true"]}


def test_predict_function_snapshots_published_versions_behind_an_alias(template: dict[str, Any]) -> None:
    properties = template["Resources"]["PredictFunction"]["Properties"]
    # SAM publishes a version per deploy and points the alias at it; the API's events then call the alias
    assert properties["AutoPublishAlias"] == "live"
    # a new layer (its logical id hashes its content) must publish a new version too, or the alias keeps the old
    assert properties["AutoPublishAliasAllProperties"] is True
    assert properties["SnapStart"] == {"ApplyOn": {"Fn::If": ["PredictSnapStartEnabled", "PublishedVersions", "None"]}}
    assert template["Globals"]["Function"]["Runtime"] in {"python3.12", "python3.13"}  # SnapStart for Python: 3.12+


def test_only_the_api_function_uses_snapstart(template: dict[str, Any]) -> None:
    # the batch and upload functions run long or rarely: a snapshot would not pay for its restore
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert [k for k, v in functions.items() if "SnapStart" in v["Properties"]] == ["PredictFunction"]
