"""The nightly job in infra/template.yaml: a state machine started by the schedule, a Distributed Map whose
concurrency is a stack parameter, least-privilege policies, and a definition both AWS's grammar (as moto
parses it) and the local runner accept. cfn-lint does not look inside a SAM state machine's definition, so
these tests do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from refund_sorter.config import Settings
from refund_sorter_cli.stepfunctions import check_definition, state_machine_definition
from refund_sorter_cli.template import Template
from tests.infrastructure.test_template import TEMPLATE_PATH, as_list, load_template

BUCKET_ARN = "arn:${AWS::Partition}:s3:::${AWS::StackName}-images-${AWS::AccountId}-${AWS::Region}"
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = load_template(TEMPLATE_PATH)["Resources"]
    return resources


@pytest.fixture(scope="module")
def machine(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = resources["NightlyStateMachine"]["Properties"]
    return properties


@pytest.fixture(scope="module")
def definition(machine: dict[str, Any]) -> dict[str, Any]:
    """The definition file as written (placeholders and all), the one the template deploys."""
    document: dict[str, Any] = yaml.safe_load((Path(TEMPLATE_PATH).parent / machine["DefinitionUri"]).read_text())
    return document


@pytest.fixture(scope="module")
def states(definition: dict[str, Any]) -> dict[str, Any]:
    states: dict[str, Any] = definition["States"]
    return states


def test_the_definition_is_one_file_that_the_template_deploys_and_the_runner_reads(machine: dict[str, Any]) -> None:
    assert "Definition" not in machine, "one definition: the file DefinitionUri names"
    assert machine["DefinitionUri"] == "statemachine/nightly.asl.yaml"
    plan = state_machine_definition(Template())["States"]["Plan"]
    assert plan["Parameters"]["FunctionName"].endswith(":function:refund-sorter-local-plan-function")


def statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in resource["Properties"].get("Policies", []) for s in as_list(policy.get("Statement", []))]


def actions_on(resource: dict[str, Any]) -> dict[str, set[str]]:
    """Action → the resources it is allowed on (as JSON text, intrinsics and all)."""
    allowed: dict[str, set[str]] = {}
    for statement in statements(resource):
        for action in as_list(statement["Action"]):
            allowed.setdefault(action, set()).update(json.dumps(r) for r in as_list(statement["Resource"]))
    return allowed


# ------------------------------------------------------------------------------------------------ schedule


def test_the_schedule_starts_the_state_machine_and_no_nightly_function(
    resources: dict[str, dict[str, Any]], machine: dict[str, Any]
) -> None:
    assert resources["NightlyStateMachine"]["Type"] == "AWS::Serverless::StateMachine"
    assert machine["Type"] == "STANDARD"  # a night can take longer than an express workflow's 5 minutes
    (event,) = machine["Events"].values()
    assert event["Type"] == "ScheduleV2"
    assert event["Properties"]["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    scheduled = {
        name
        for name, resource in resources.items()
        for e in resource.get("Properties", {}).get("Events", {}).values()
        if e["Type"] in {"Schedule", "ScheduleV2"}
    }
    # the only other schedule is the optional training one (TrainingSchedule), never a nightly function
    assert scheduled == {"NightlyStateMachine", "TrainFunction"}


def test_the_machine_has_plan_map_and_export_in_that_order(
    states: dict[str, Any], machine: dict[str, Any], definition: dict[str, Any]
) -> None:
    assert definition["StartAt"] == "Plan"
    assert states["Plan"]["Next"] == "IsAnotherRunGoing"
    assert states["IsAnotherRunGoing"]["Default"] == "ClassifyChunks"
    assert states["ClassifyChunks"]["Next"] == "Export"
    (catch,) = states["ClassifyChunks"]["Catch"]
    assert catch["Next"] == "Export", "a failed map still gets its export and summary"
    assert catch["ErrorEquals"] == ["States.ALL"]
    functions = {name: state["Parameters"]["FunctionName"] for name, state in states.items() if state["Type"] == "Task"}
    assert functions == {
        "Plan": "${PlanFunctionArn}",
        "Export": "${ExportFunctionArn}",
        "Retrain": "${TrainFunctionArn}",
    }
    # after the export, the loop's retraining; whatever becomes of it, the night ends as its map went
    assert states["Export"]["Next"] == "Retrain"
    assert states["Retrain"]["Parameters"]["Payload"] == {"nightly": True}
    assert states["Retrain"]["Next"] == "DidTheMapFail"
    (caught,) = states["Retrain"]["Catch"]
    assert (caught["ErrorEquals"], caught["Next"], caught["ResultPath"]) == (
        ["States.ALL"],
        "DidTheMapFail",
        "$.retrain_error",
    )
    substitutions = machine["DefinitionSubstitutions"]
    assert substitutions["TrainFunctionArn"] == {"Fn::GetAtt": ["TrainFunction", "Arn"]}
    assert substitutions["PlanFunctionArn"] == {"Fn::GetAtt": ["PlanFunction", "Arn"]}
    assert substitutions["ExportFunctionArn"] == {"Fn::GetAtt": ["ExportFunction", "Arn"]}
    assert substitutions["ClassifyChunkFunctionArn"] == {"Fn::GetAtt": ["ClassifyChunkFunction", "Arn"]}


# ------------------------------------------------------------------------------------------------ the map


def test_the_map_is_distributed_over_the_manifest_with_concurrency_from_a_parameter(
    template_document: dict[str, Any], states: dict[str, Any], machine: dict[str, Any]
) -> None:
    fan_out = states["ClassifyChunks"]
    assert fan_out["Type"] == "Map"
    assert fan_out["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert fan_out["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert fan_out["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert "ItemBatcher" not in fan_out, "chunks are made by the plan step"
    # MaxConcurrency: the stack parameter, made a number by the plan state (substitutions are strings)
    assert "MaxConcurrency" not in fan_out
    assert fan_out["MaxConcurrencyPath"] == "$.max_concurrency"
    assert states["Plan"]["ResultSelector"]["max_concurrency.$"] == "States.StringToJson('${MaxConcurrency}')"
    assert machine["DefinitionSubstitutions"]["MaxConcurrency"] == {"Ref": "MaxConcurrency"}
    parameter = template_document["Parameters"]["MaxConcurrency"]
    assert parameter["Type"] == "Number"
    assert 1 <= parameter["Default"] <= parameter["MaxValue"] <= 10_000  # a Distributed Map's own ceiling
    assert 0 < fan_out["ToleratedFailurePercentage"] <= 20
    assert fan_out["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"


def test_the_worker_retries_throttling_with_backoff_and_a_dead_worker_twice(states: dict[str, Any]) -> None:
    processor = states["ClassifyChunks"]["ItemProcessor"]
    worker = processor["States"][processor["StartAt"]]
    assert worker["Parameters"]["FunctionName"] == "${ClassifyChunkFunctionArn}"
    assert worker["Parameters"]["Payload"]["attempt.$"] == "$$.State.RetryCount"  # how the worker knows to go slow
    throttled, anything = worker["Retry"]
    assert set(throttled["ErrorEquals"]) >= LAMBDA_ERRORS
    assert throttled["BackoffRate"] >= 2 and throttled["JitterStrategy"] == "FULL" and throttled["MaxAttempts"] >= 6
    # two retries: the first goes photo by photo, the second fails the photo that killed the first
    assert anything["ErrorEquals"] == ["States.ALL"] and anything["MaxAttempts"] == 2


def test_the_run_cannot_outlive_its_lease(definition: dict[str, Any]) -> None:
    assert definition["TimeoutSeconds"] <= Settings().run_lease_seconds


def test_a_chunk_fits_well_inside_the_worker_timeout(
    template_document: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    # bench/results.md measures ~50 ms per 12 MP photo at 2048 MB; at twice that a chunk must take ≤ 1/4 timeout
    chunk_size = template_document["Parameters"]["ChunkSize"]["Default"]
    assert chunk_size == Settings().chunk_size
    timeout = resources["ClassifyChunkFunction"]["Properties"]["Timeout"]
    assert chunk_size * 0.100 <= timeout / 4


# ------------------------------------------------------------------------------------------------ the definition


def test_moto_parses_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto's ASL grammar (LocalStack's) rejects fields Step Functions does not know; in-process, no endpoint.
    import boto3
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    definition = state_machine_definition(Template())
    # moto's grammar lexes only a decimal there (Step Functions takes any number from 0 to 100)
    fan_out = definition["States"]["ClassifyChunks"]
    fan_out["ToleratedFailurePercentage"] = float(fan_out["ToleratedFailurePercentage"])
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        role = "arn:aws:iam::123456789012:role/refund-sorter-nightly"
        created = client.create_state_machine(name="nightly", definition=json.dumps(definition), roleArn=role)
    assert created["stateMachineArn"].endswith(":nightly")


def test_the_local_runner_implements_everything_the_definition_uses() -> None:
    definition = state_machine_definition(Template())
    check_definition(definition)  # raises on any state, field or path the runner would not run as AWS does
    assert "${" not in json.dumps(definition)


# ------------------------------------------------------------------------------------------------ permissions


def test_the_state_machine_may_invoke_exactly_its_four_functions_and_run_its_map(
    resources: dict[str, dict[str, Any]],
) -> None:
    machine = resources["NightlyStateMachine"]
    invoked = sorted(p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in machine["Properties"]["Policies"]
                     if "LambdaInvokePolicy" in p)  # fmt: skip
    assert invoked == ["ClassifyChunkFunction", "ExportFunction", "PlanFunction", "TrainFunction"]
    allowed = actions_on(machine)
    own_arn = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-nightly"
    runs = json.dumps({"Fn::Sub": f"{BUCKET_ARN}/runs/*"})
    assert allowed["s3:GetObject"] == {runs} and allowed["s3:PutObject"] == {runs}
    assert allowed["states:StartExecution"] == {json.dumps({"Fn::Sub": own_arn})}
    assert machine["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-nightly"}


def test_the_jobs_table_expires_its_items(resources: dict[str, dict[str, Any]]) -> None:
    properties = resources["JobsTable"]["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    for name in ("PlanFunction", "ClassifyChunkFunction", "ExportFunction"):
        variables = resources[name]["Properties"]["Environment"]["Variables"]
        assert variables["REFUND_SORTER_JOBS_TABLE"] == {"Ref": "JobsTable"}


def test_alarms_watch_failed_runs_and_tolerated_chunk_failures(resources: dict[str, dict[str, Any]]) -> None:
    run_failed = resources["NightlyRunFailedAlarm"]["Properties"]
    watched = {m["MetricStat"]["Metric"]["MetricName"] for m in run_failed["Metrics"] if "MetricStat" in m}
    assert {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"} <= watched
    for metric in run_failed["Metrics"]:
        if "MetricStat" in metric:
            dimension = metric["MetricStat"]["Metric"]["Dimensions"][0]
            assert dimension == {"Name": "StateMachineArn", "Value": {"Ref": "NightlyStateMachine"}}
    chunks = resources["NightlyChunksFailedAlarm"]["Properties"]
    assert (chunks["Namespace"], chunks["MetricName"]) == ("RefundSorter", "NightlyChunksFailed")  # export_handler's
    for alarm in (run_failed, chunks):
        assert alarm["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }


def test_run_records_expire(resources: dict[str, dict[str, Any]]) -> None:
    rules = resources["ImagesBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (runs,) = [r for r in rules if r.get("Prefix") == Settings().runs_prefix]
    assert runs["Status"] == "Enabled" and runs["ExpirationInDays"] > 0


@pytest.fixture(scope="module")
def template_document() -> dict[str, Any]:
    return load_template(Path(TEMPLATE_PATH))
