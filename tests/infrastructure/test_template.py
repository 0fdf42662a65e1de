"""Assertions on infra/template.yaml that matter for security and for the contracts in design.md.

cfn-lint and ``sam validate --lint`` (``make validate``) check that the template is well-formed; these tests
check that it says what we mean: a private, encrypted bucket, the table schemas the code relies on, one
nightly batch at 02:00 UTC, an authenticated and throttled API with every route of design.md §3, and
least-privilege function policies. They read the YAML only: no AWS, no SAM, no Docker.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from refund_sorter_cli.template import CloudFormationLoader

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "infra" / "template.yaml"
EVENTS = ROOT / "events"

BUCKET_NAME = {"Fn::Sub": "${AWS::StackName}-images-${AWS::AccountId}-${AWS::Region}"}
# design.md §3 and §8, as API Gateway spells the paths: the machine clients' API (IAM or API key)
ROUTES = {
    ("POST", "/predictions"),
    ("GET", "/predictions"),
    ("GET", "/predictions/{id}"),
    ("PATCH", "/predictions/{id}"),
    ("DELETE", "/predictions/{id}/review"),
    ("GET", "/predictions/{id}/photo"),
    ("GET", "/summaries/{date}"),
    ("GET", "/exports/{date}"),
    ("GET", "/departments"),
    ("GET", "/health"),
    ("GET", "/swagger"),
}
# The review page's API (Cognito): the page's own files are public, every call it makes needs a signed-in person.
PAGE_FILES = {("GET", "/review"), ("GET", "/review/{asset}")}
REVIEW_ROUTES = PAGE_FILES | {
    ("GET", "/predictions"),
    ("GET", "/predictions/{id}"),
    ("PATCH", "/predictions/{id}"),
    ("DELETE", "/predictions/{id}/review"),
    ("GET", "/predictions/{id}/photo"),
    ("GET", "/summaries/{date}"),
    ("GET", "/departments"),
}
LOCAL_NAMES = {
    "REFUND_SORTER_BUCKET": "refund-sorter-local-images-123456789012-us-east-1",
    "REFUND_SORTER_TABLE": "refund-sorter-local-results",
    "REFUND_SORTER_IDEMPOTENCY_TABLE": "refund-sorter-local-idempotency",
    "REFUND_SORTER_MODELS_TABLE": "refund-sorter-local-models",
}


def load_template(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=CloudFormationLoader)
    return document


def is_intrinsic(value: Any) -> bool:
    """Whether ``value`` (or anything inside it) is an intrinsic function or a Ref."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, argument),) = value.items()
            # {"Condition": "Name"} is !Condition; a policy statement's Condition block is a mapping
            if key == "Ref" or key.startswith("Fn::") or (key == "Condition" and isinstance(argument, str)):
                return True
        return any(is_intrinsic(v) for v in value.values())
    if isinstance(value, list):
        return any(is_intrinsic(v) for v in value)
    return False


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return template["Resources"]


@pytest.fixture(scope="module")
def functions(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}


@pytest.fixture(scope="module")
def global_env(template: dict[str, Any]) -> dict[str, Any]:
    return template["Globals"]["Function"]["Environment"]["Variables"]


def of_type(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------------------------ bucket


def test_bucket_is_private(resources: dict[str, dict[str, Any]]) -> None:
    bucket = resources["ImagesBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_bucket_is_encrypted_and_versioned(resources: dict[str, dict[str, Any]]) -> None:
    bucket = resources["ImagesBucket"]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    expiring = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "NoncurrentVersionExpiration" in r]
    assert expiring, "versioning without expiry keeps every moved photo forever"
    assert all(r["Status"] == "Enabled" and r["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0 for r in expiring)


def test_bucket_policy_denies_plain_http(resources: dict[str, dict[str, Any]]) -> None:
    (policy,) = of_type(resources, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "ImagesBucket"}
    denials = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert len(denials) == 1
    (deny,) = denials
    assert deny["Principal"] == "*"
    assert deny["Action"] in ("s3:*", ["s3:*"])
    assert {"Fn::GetAtt": ["ImagesBucket", "Arn"]} in deny["Resource"], "the bucket itself (ListBucket)"
    assert {"Fn::Sub": "${ImagesBucket.Arn}/*"} in deny["Resource"], "its objects"


def test_functions_name_the_bucket_exactly_as_the_bucket_does(
    resources: dict[str, dict[str, Any]], global_env: dict[str, Any]
) -> None:
    # GIVEN the bucket's explicit name (a !Ref from the functions would be circular with the S3 event)
    assert resources["ImagesBucket"]["Properties"]["BucketName"] == BUCKET_NAME
    # THEN the functions' setting is the very same string
    assert global_env["REFUND_SORTER_BUCKET"] == BUCKET_NAME


def test_no_function_refers_to_the_bucket_resource(functions: dict[str, dict[str, Any]]) -> None:
    # The bucket's notification configuration refers to OnUploadFunction: a reference back is a cycle.
    for name, function in functions.items():
        text = json.dumps(function["Properties"].get("Policies", []))
        assert "ImagesBucket" not in text, name
        assert "ImagesBucket" not in json.dumps(function["Properties"].get("Environment", {})), name


# ------------------------------------------------------------------------------------------------ tables


def _attribute_types(table: dict[str, Any]) -> dict[str, str]:
    return {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}


def test_results_table_schema(resources: dict[str, dict[str, Any]]) -> None:
    table = resources["ResultsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert _attribute_types(properties) == {"id": "S", "day": "S", "timestamp": "S", "queue": "S", "priority": "N"}
    by_day, queue, informative = properties["GlobalSecondaryIndexes"]
    assert by_day["IndexName"] == "by-day"
    assert by_day["KeySchema"] == [
        {"AttributeName": "day", "KeyType": "HASH"},
        {"AttributeName": "timestamp", "KeyType": "RANGE"},
    ]
    # the review queue: sparse on `queue` (set only while needs_review), oldest first across days
    assert queue["IndexName"] == "review-queue"
    assert queue["KeySchema"] == [
        {"AttributeName": "queue", "KeyType": "HASH"},
        {"AttributeName": "timestamp", "KeyType": "RANGE"},
    ]
    # the same queue by priority (lower = ask sooner): sparse on `queue` and on `priority`
    assert informative["IndexName"] == "review-informative"
    assert informative["KeySchema"] == [
        {"AttributeName": "queue", "KeyType": "HASH"},
        {"AttributeName": "priority", "KeyType": "RANGE"},
    ]
    for index in (by_day, queue, informative):
        assert index["Projection"] == {"ProjectionType": "ALL"}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True


def test_idempotency_table_schema(resources: dict[str, dict[str, Any]]) -> None:
    properties = resources["IdempotencyTable"]["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert _attribute_types(properties) == {"id": "S"}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True


@pytest.mark.parametrize("name", ["ResultsTable", "IdempotencyTable", "ModelsTable", "JobsTable"])
def test_table_definitions_are_literal(resources: dict[str, dict[str, Any]], name: str) -> None:
    # The local stack and the tests pass these properties straight to moto's create_table.
    properties = resources[name]["Properties"]
    for key in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode"):
        assert not is_intrinsic(properties.get(key)), f"{name}.{key} must not use intrinsics"


@pytest.mark.parametrize("name", ["ResultsTable", "IdempotencyTable", "ModelsTable", "JobsTable"])
def test_table_defines_exactly_its_key_attributes(resources: dict[str, dict[str, Any]], name: str) -> None:
    # DynamoDB refuses attribute definitions that no key schema uses, and keys that are not defined.
    properties = resources[name]["Properties"]
    schemas = [properties["KeySchema"], *(i["KeySchema"] for i in properties.get("GlobalSecondaryIndexes", []))]
    used = {k["AttributeName"] for schema in schemas for k in schema}
    assert used == set(_attribute_types(properties))


def test_the_template_has_one_bucket_and_three_tables(resources: dict[str, dict[str, Any]]) -> None:
    # The local stack creates every bucket and table it finds: a new one should be a deliberate change.
    assert set(of_type(resources, "AWS::S3::Bucket")) == {"ImagesBucket"}
    assert set(of_type(resources, "AWS::DynamoDB::Table")) == {
        "ResultsTable",
        "IdempotencyTable",
        "ModelsTable",
        "JobsTable",
    }


# ------------------------------------------------------------------------------------------------ functions


def test_globals(template: dict[str, Any], global_env: dict[str, Any]) -> None:
    function_globals = template["Globals"]["Function"]
    assert function_globals["Runtime"] in {"python3.12", "python3.13"}
    assert function_globals["Tracing"] == "Active"
    assert function_globals["Architectures"] == [{"Ref": "Architecture"}]
    assert global_env["POWERTOOLS_SERVICE_NAME"] == "refund-sorter"
    assert global_env["POWERTOOLS_METRICS_NAMESPACE"] == "RefundSorter"
    assert global_env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert global_env["REFUND_SORTER_TABLE"] == {"Ref": "ResultsTable"}
    assert global_env["REFUND_SORTER_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert global_env["REFUND_SORTER_CONFIDENCE_THRESHOLD"] == {"Ref": "ConfidenceThreshold"}


def test_x86_64_is_the_default_architecture(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["Architecture"]
    assert parameter["Default"] == "x86_64"
    assert parameter["AllowedValues"] == ["x86_64", "arm64"]
    assert "10038" in parameter["Description"], "arm64 is documented as untested (onnxruntime#10038)"


def test_private_urls_are_refused_in_aws(global_env: dict[str, Any], functions: dict[str, dict[str, Any]]) -> None:
    assert global_env["REFUND_SORTER_ALLOW_PRIVATE_URLS"] == "false"  # the string Lambda passes, not a YAML bool
    for name, function in functions.items():
        overrides = function["Properties"].get("Environment", {}).get("Variables", {})
        assert "REFUND_SORTER_ALLOW_PRIVATE_URLS" not in overrides, name


def test_environment_names_real_settings(global_env: dict[str, Any], functions: dict[str, dict[str, Any]]) -> None:
    # A misspelt REFUND_SORTER_* variable is silently ignored by pydantic-settings.
    from refund_sorter.config import Settings

    names = set(global_env)
    for function in functions.values():
        names |= set(function["Properties"].get("Environment", {}).get("Variables", {}))
    fields = {name.removeprefix("REFUND_SORTER_").lower() for name in names if name.startswith("REFUND_SORTER_")}
    assert fields <= set(Settings.model_fields)


@pytest.mark.parametrize(
    ("function", "handler"),
    [
        ("PredictFunction", "predict_handler.lambda_handler"),
        ("PlanFunction", "plan_handler.lambda_handler"),
        ("ClassifyChunkFunction", "worker_handler.lambda_handler"),
        ("ExportFunction", "export_handler.lambda_handler"),
        ("OnUploadFunction", "upload_handler.on_upload"),
    ],
)
def test_handlers_exist_where_the_template_says(
    functions: dict[str, dict[str, Any]], function: str, handler: str
) -> None:
    properties = functions[function]["Properties"]
    assert properties["Handler"] == handler
    module, _, attribute = handler.rpartition(".")
    source = TEMPLATE_PATH.parent / properties["CodeUri"] / f"{module}.py"
    assert source.is_file(), source
    defined = {
        node.name for node in ast.parse(source.read_text(encoding="utf-8")).body if isinstance(node, ast.FunctionDef)
    }
    assert attribute in defined


def test_every_function_runs_on_the_model_layer(
    resources: dict[str, dict[str, Any]], functions: dict[str, dict[str, Any]], template: dict[str, Any]
) -> None:
    layer = resources["ModelLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"] == "../layers/model"
    assert template["Globals"]["Function"]["Runtime"] in layer["Properties"]["CompatibleRuntimes"]
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    for name, function in functions.items():
        if name == "TrainFunction":  # scikit-learn's layer instead (test_template_training.py)
            continue
        assert {"Ref": "ModelLayer"} in function["Properties"]["Layers"], name


def test_makefile_builds_have_their_targets(resources: dict[str, dict[str, Any]]) -> None:
    # sam build runs `make build-<LogicalId>` in the CodeUri/ContentUri folder's Makefile.
    for name, resource in resources.items():
        if resource.get("Metadata", {}).get("BuildMethod") != "makefile":
            continue
        properties = resource["Properties"]
        folder = TEMPLATE_PATH.parent / properties.get("CodeUri", properties.get("ContentUri", ""))
        makefile = (folder / "Makefile").read_text(encoding="utf-8")
        assert re.search(rf"^[^#\n]*\bbuild-{name}\b[^\n]*:", makefile, re.MULTILINE), (
            f"{folder}/Makefile: build-{name}"
        )


def test_the_nightly_run_starts_at_two_utc(template: dict[str, Any], resources: dict[str, dict[str, Any]]) -> None:
    # (tests/infrastructure/test_nightly_template.py: the schedule starts the state machine, nothing else)
    (event,) = resources["NightlyStateMachine"]["Properties"]["Events"].values()
    assert event["Type"] == "ScheduleV2"
    assert event["Properties"]["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert event["Properties"].get("ScheduleExpressionTimezone", "UTC") == "UTC"
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "cron(0 2 * * ? *)"


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("cron(0 2 * * ? *)", True),
        ("cron(30 1 ? * MON-FRI *)", True),
        ("rate(1 day)", True),
        ("cron(0 2 * * * *)", False),  # needs "?" in day-of-month or day-of-week
        ("cron(0 2 ? * ? *)", False),
        ("cron(0 2 * * ?)", False),  # five fields: unix cron, not EventBridge
        ("0 2 * * *", False),
    ],
)
def test_schedule_expression_pattern(template: dict[str, Any], expression: str, allowed: bool) -> None:
    # moto and cfn-lint accept any string here; CloudFormation enforces AllowedPattern on deploy.
    pattern = template["Parameters"]["ScheduleExpression"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, expression)) is allowed


def test_classify_on_upload_is_optional_and_watches_incoming(
    template: dict[str, Any], functions: dict[str, dict[str, Any]]
) -> None:
    assert template["Parameters"]["ClassifyOnUpload"]["Default"] == "false"
    assert template["Conditions"]["ClassifyOnUploadEnabled"] == {"Fn::Equals": [{"Ref": "ClassifyOnUpload"}, "true"]}
    function = functions["OnUploadFunction"]
    assert function["Condition"] == "ClassifyOnUploadEnabled"
    (event,) = function["Properties"]["Events"].values()
    assert event["Type"] == "S3"
    assert event["Properties"]["Bucket"] == {"Ref": "ImagesBucket"}
    assert event["Properties"]["Events"] in ("s3:ObjectCreated:*", ["s3:ObjectCreated:*"])
    assert event["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "incoming/"}]


def _statements(policy: Any) -> list[dict[str, Any]]:
    statements = policy["Statement"] if isinstance(policy, dict) and "Statement" in policy else []
    return [s for s in as_list(statements) if isinstance(s, dict)]


def test_function_policies_are_scoped(functions: dict[str, dict[str, Any]]) -> None:
    for name, function in functions.items():
        for policy in function["Properties"].get("Policies", []):
            assert not isinstance(policy, str), f"{name}: managed policy {policy!r} - use a scoped template"
            if "Statement" in policy:
                for statement in _statements(policy):
                    resources = as_list(statement.get("Resource"))
                    assert resources and all(r != "*" for r in resources), f"{name}: {statement.get('Sid')}"
                    assert all(
                        not (isinstance(r, dict) and "Fn::Sub" in r and str(r["Fn::Sub"]).endswith(":*"))
                        for r in resources
                    ), f"{name}: {statement.get('Sid')}"
                    actions = as_list(statement["Action"])
                    assert all(a != "*" and not a.endswith(":*") for a in actions), f"{name}: {actions}"
            else:
                ((template_name, arguments),) = policy.items()
                assert template_name.endswith("Policy"), f"{name}: {template_name}"
                for value in (arguments or {}).values():
                    assert value != "*", f"{name}: {template_name} on every resource"


def test_batch_may_move_photos(functions: dict[str, dict[str, Any]]) -> None:
    # refund_sorter.storage.bucket moves a photo with copy_object (tagging failed/ copies) and deletes the exact
    # version it copied: DeleteObjectVersion and PutObjectTagging are not in SAM's S3CrudPolicy.
    for name in ("ClassifyChunkFunction", "OnUploadFunction"):
        actions = {
            action
            for policy in functions[name]["Properties"]["Policies"]
            for statement in _statements(policy)
            for action in as_list(statement["Action"])
        }
        needed = {"s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObjectVersion"}
        assert needed <= actions, f"{name} lacks {needed - actions}"


# ------------------------------------------------------------------------------------------------ API


def _api_events(functions: dict[str, dict[str, Any]], api: str = "Api") -> list[dict[str, Any]]:
    events = functions["PredictFunction"]["Properties"]["Events"].values()
    return [e for e in events if e["Type"] == "Api" and e["Properties"]["RestApiId"] == {"Ref": api}]


def _routes(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events)


def test_every_route_is_an_api_event(functions: dict[str, dict[str, Any]]) -> None:
    assert _routes(_api_events(functions)) == sorted(ROUTES)
    assert _routes(_api_events(functions, "ReviewApi")) == sorted(REVIEW_ROUTES)
    every = [e for e in functions["PredictFunction"]["Properties"]["Events"].values() if e["Type"] == "Api"]
    assert len(every) == len(ROUTES) + len(REVIEW_ROUTES), "no API event outside Api and ReviewApi"


def test_review_api_signs_people_in_with_cognito(
    functions: dict[str, dict[str, Any]], resources: dict[str, dict[str, Any]]
) -> None:
    properties = resources["ReviewApi"]["Properties"]
    auth = properties["Auth"]
    assert auth["DefaultAuthorizer"] == "ReviewerSignIn"
    authorizer = auth["Authorizers"]["ReviewerSignIn"]
    assert authorizer["UserPoolArn"] == {"Fn::GetAtt": ["ReviewerPool", "Arn"]}
    assert authorizer["Identity"] == {"Header": "Authorization"}
    # only the page's own files are public; every call it makes (queue, decisions, photos) needs the sign-in
    for event in _api_events(functions, "ReviewApi"):
        route = (event["Properties"]["Method"], event["Properties"]["Path"])
        public = event["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
        assert public == (route in PAGE_FILES), route
    # the page learns where to sign in from the stage (no cycle through the function's environment)
    assert properties["Variables"] == {
        "signInUrl": {"Fn::Sub": "https://${ReviewerPoolDomain}.auth.${AWS::Region}.amazoncognito.com"},
        "signInClientId": {"Ref": "ReviewPageClient"},
    }
    assert len(properties["MethodSettings"]) == 1 and "ThrottlingRateLimit" in properties["MethodSettings"][0]


def test_reviewers_are_added_by_an_admin_and_sign_in_with_pkce(resources: dict[str, dict[str, Any]]) -> None:
    from refund_sorter.api.page import SIGN_IN_CLIENT_VARIABLE, SIGN_IN_URL_VARIABLE

    assert {SIGN_IN_URL_VARIABLE, SIGN_IN_CLIENT_VARIABLE} == set(resources["ReviewApi"]["Properties"]["Variables"])
    pool = resources["ReviewerPool"]["Properties"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    assert resources["ReviewerPoolDomain"]["Properties"]["UserPoolId"] == {"Ref": "ReviewerPool"}
    client = resources["ReviewPageClient"]["Properties"]
    assert client["GenerateSecret"] is False, "a page cannot keep a secret: PKCE instead"
    assert client["AllowedOAuthFlows"] == ["code"], "authorization code only (no implicit flow)"
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert "openid" in client["AllowedOAuthScopes"]
    page = {"Fn::Sub": "https://${ReviewApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}/review"}
    assert client["CallbackURLs"] == [page]
    assert client["LogoutURLs"] == [page]


def test_iam_is_the_default_auth(template: dict[str, Any], resources: dict[str, dict[str, Any]]) -> None:
    parameter = template["Parameters"]["AuthMode"]
    assert parameter["Default"] == "IAM"
    assert parameter["AllowedValues"] == ["IAM", "API_KEY"]
    assert template["Conditions"]["UseIamAuth"] == {"Fn::Equals": [{"Ref": "AuthMode"}, "IAM"]}
    body = resources["Api"]["Properties"]["DefinitionBody"]
    assert body["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert body["securityDefinitions"]["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    # Every operation is authenticated, whichever mode: nothing is anonymous in AWS.
    operations = {(method.upper(), path): op for path, item in body["paths"].items() for method, op in item.items()}
    assert set(operations) == ROUTES
    for route, operation in operations.items():
        assert operation["security"] == {"Fn::If": ["UseIamAuth", [{"sigv4": []}], [{"api_key": []}]]}, route
    assert "Auth" not in resources["Api"]["Properties"], "auth is chosen per operation in DefinitionBody"


def test_api_key_mode_has_a_usage_plan(resources: dict[str, dict[str, Any]]) -> None:
    plan = resources["ApiUsagePlan"]
    assert plan["Condition"] == "UseApiKey"
    assert plan["Properties"]["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": "Api.Stage"}}]
    assert {"RateLimit", "BurstLimit"} <= set(plan["Properties"]["Throttle"])
    assert resources["ApiKey"]["Condition"] == "UseApiKey"
    assert resources["ApiUsagePlanKey"]["Properties"] == {
        "KeyId": {"Ref": "ApiKey"},
        "KeyType": "API_KEY",
        "UsagePlanId": {"Ref": "ApiUsagePlan"},
    }


def test_stage_is_throttled(template: dict[str, Any], resources: dict[str, dict[str, Any]]) -> None:
    (settings,) = resources["Api"]["Properties"]["MethodSettings"]
    assert settings["ResourcePath"] == "/*"
    assert settings["HttpMethod"] == "*"
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}
    for name in ("ApiThrottleRateLimit", "ApiThrottleBurstLimit"):
        assert 0 < template["Parameters"][name]["Default"] <= 100


def test_api_function_fits_api_gateway_timeout(functions: dict[str, dict[str, Any]]) -> None:
    assert functions["PredictFunction"]["Properties"]["Timeout"] <= 29


# ------------------------------------------------------------------------------------------------ alarms, outputs


def test_every_function_has_an_errors_alarm(
    resources: dict[str, dict[str, Any]], functions: dict[str, dict[str, Any]]
) -> None:
    alarms = of_type(resources, "AWS::CloudWatch::Alarm").values()
    watched = {
        (a["Properties"]["MetricName"], a["Properties"]["Dimensions"][0]["Value"]["Ref"])
        for a in alarms
        if a["Properties"].get("Namespace") == "AWS/Lambda"
    }
    for name in functions:
        assert ("Errors", name) in watched, name
    assert ("Throttles", "ClassifyChunkFunction") in watched


def test_outputs_for_integration_tests(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for name in (
        "ApiUrl",
        "ImagesBucketName",
        "ResultsTableName",
        "IdempotencyTableName",
        "ReviewPageUrl",
        "ReviewerPoolId",
    ):
        assert name in outputs
    for name in ("PredictFunctionName", "ClassifyChunkFunctionName", "OnUploadFunctionName", "NightlyStateMachineArn"):
        assert name in outputs
    assert outputs["ApiKeyId"]["Condition"] == "UseApiKey"
    assert outputs["OnUploadFunctionName"]["Condition"] == "ClassifyOnUploadEnabled"


def test_conditional_resources_only_refer_to_resources_that_exist(resources: dict[str, dict[str, Any]]) -> None:
    # A resource that exists only under a condition must not be referred to from one that always exists.
    conditional = {name: r["Condition"] for name, r in resources.items() if "Condition" in r}
    for name, resource in resources.items():
        text = json.dumps(resource.get("Properties", {}))
        for other, condition in conditional.items():
            if other != name and re.search(rf'"(Ref|Fn::GetAtt)": \[?"{other}"', text):
                assert resource.get("Condition") == condition, f"{name} refers to {other} ({condition})"


# ------------------------------------------------------------------------------------------------ sample events


def _route_of(event: dict[str, Any]) -> tuple[str, str]:
    return event["httpMethod"], event["resource"]


@pytest.mark.parametrize("path", sorted(EVENTS.glob("api-*.json")), ids=lambda p: p.name)
def test_api_sample_events_are_rest_proxy_events_for_real_routes(path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    for key in (
        "resource",
        "path",
        "httpMethod",
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "pathParameters",
        "requestContext",
        "body",
        "isBase64Encoded",
    ):
        assert key in event, key
    assert _route_of(event) in ROUTES | REVIEW_ROUTES
    context = event["requestContext"]
    assert {"requestId", "stage", "identity", "resourcePath", "httpMethod"} <= set(context)
    assert context["resourcePath"] == event["resource"] and context["httpMethod"] == event["httpMethod"]
    template_path = re.sub(r"\{(\w+)\}", lambda m: (event["pathParameters"] or {})[m[1]], event["resource"])
    assert template_path == event["path"]


def test_api_sample_events_cover_every_route() -> None:
    covered = {_route_of(json.loads(p.read_text(encoding="utf-8"))) for p in EVENTS.glob("api-*.json")}
    assert covered == ROUTES | REVIEW_ROUTES


def test_env_file_points_at_the_local_stack(global_env: dict[str, Any]) -> None:
    env = json.loads((EVENTS / "env.json").read_text(encoding="utf-8"))["Parameters"]
    assert env["REFUND_SORTER_ENDPOINT_URL"] == "http://host.docker.internal:5000"
    for name, value in LOCAL_NAMES.items():
        assert env[name] == value
    # sam local only passes variables the template declares
    undeclared = set(env) - set(global_env)
    assert not undeclared, f"sam local invoke ignores {undeclared}"


def test_s3_sample_event_is_an_upload_to_incoming() -> None:
    (record,) = json.loads((EVENTS / "s3-object-created.json").read_text(encoding="utf-8"))["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == LOCAL_NAMES["REFUND_SORTER_BUCKET"]
    assert record["s3"]["object"]["key"].startswith("incoming/")


def test_schedule_sample_event_has_the_schedules_input_shape(resources: dict[str, dict[str, Any]]) -> None:
    (event,) = resources["NightlyStateMachine"]["Properties"]["Events"].values()
    scheduled_input = json.loads(event["Properties"]["Input"])
    sample = json.loads((EVENTS / "schedule.json").read_text(encoding="utf-8"))
    assert set(sample) == set(scheduled_input)
    assert sample["source"] == scheduled_input["source"]
