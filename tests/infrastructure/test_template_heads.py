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


# The one function that publishes versions and moves the pointer (when its event asks it to activate).
TRAINING = "TrainFunction"


def test_functions_only_read_heads(template: dict[str, Any]) -> None:
    """Publishing versions and moving the pointer is the training job's (and the CLI's, with the user's
    credentials), never a sorting function's; what each function may do is otherwise derived from its code in
    test_permissions."""
    functions = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert TRAINING in functions
    for name, function in functions.items():
        if name == TRAINING:
            continue
        for policy in function["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resources = str(statement["Resource"])
                if "ModelsTable" in resources:
                    assert actions == ["dynamodb:GetItem"] or actions == "dynamodb:GetItem", (name, statement)
                if "/models/" in resources:
                    assert set(actions) <= {"s3:GetObject"}, (name, statement)
