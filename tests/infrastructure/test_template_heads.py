"""The template's part of custom heads: the models table and what the functions may do with heads."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infrastructure.test_template import TEMPLATE_PATH, load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def test_every_function_knows_the_models_table(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["REFUND_SORTER_MODELS_TABLE"] == {"Ref": "ModelsTable"}
    table = template["Resources"]["ModelsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"  # no idle cost
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


def test_functions_may_only_read_heads_and_keep_features(template: dict[str, Any]) -> None:
    policy = template["Resources"]["ClassifierHeadsPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    roles = policy["Properties"]["Roles"]
    assert {"Ref": "PredictFunctionRole"} in roles and {"Ref": "BatchFunctionRole"} in roles
    assert {"Fn::If": ["ClassifyOnUploadEnabled", {"Ref": "OnUploadFunctionRole"}, {"Ref": "AWS::NoValue"}]} in roles
    grants = {
        statement["Sid"]: (statement["Action"], statement["Resource"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    }
    assert grants["ReadActiveModelPointer"] == ("dynamodb:GetItem", {"Fn::GetAtt": ["ModelsTable", "Arn"]})
    action, resource = grants["ReadModelVersions"]
    assert action == "s3:GetObject" and resource["Fn::Sub"].endswith("/models/*")
    action, resource = grants["KeepPhotoFeatures"]
    assert action == "s3:PutObject" and resource["Fn::Sub"].endswith("/embeddings/*")
    assert set(grants) == {"ReadActiveModelPointer", "ReadModelVersions", "KeepPhotoFeatures"}
