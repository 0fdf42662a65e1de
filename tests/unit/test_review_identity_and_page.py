"""Who a decision is recorded under, and what the review page is told about signing in: no AWS, no browser."""

from __future__ import annotations

import doctest
import json

import pytest

from refund_sorter.api import identity, page
from refund_sorter.api.identity import LOCAL_REVIEWER, caller_name
from refund_sorter.errors import NotFoundError


def test_the_examples_in_identitys_docstrings_hold() -> None:
    outcome = doctest.testmod(identity, verbose=False, report=True)
    assert outcome.attempted > 0, "identity.py's docstrings show examples; doctest found none"
    assert outcome.failed == 0


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        # the review API: Cognito's authorizer puts the ID token's claims in the event
        ({"authorizer": {"claims": {"email": "ana@example.com", "cognito:username": "5f0b"}}}, "ana@example.com"),
        ({"authorizer": {"claims": {"cognito:username": "ana"}}}, "ana"),
        # the machine clients' API: IAM, or an API key
        (
            {"identity": {"userArn": "arn:aws:iam::123456789012:user/desk", "apiKeyId": None}},
            "arn:aws:iam::123456789012:user/desk",
        ),
        ({"identity": {"userArn": None, "apiKeyId": "k-1"}}, "api-key:k-1"),
        # the local stack: nobody signs in
        ({"identity": {"sourceIp": "127.0.0.1"}}, LOCAL_REVIEWER),
        ({}, LOCAL_REVIEWER),
    ],
)
def test_caller_name(context: dict[str, object], expected: str) -> None:
    assert caller_name({"requestContext": context}) == expected


def test_no_stage_variables_means_no_sign_in() -> None:
    assert page.sign_in_settings(None) is None
    assert page.sign_in_settings({"signInUrl": "https://x.auth.us-east-1.amazoncognito.com"}) is None
    assert '<script id="sign-in-config" type="application/json">{}</script>' in page.page_html(None)


def test_the_sign_in_settings_come_from_the_stage() -> None:
    settings = page.sign_in_settings(
        {"signInUrl": "https://x.auth.eu-west-1.amazoncognito.com/", "signInClientId": "c1"}
    )
    assert settings is not None
    assert settings["authorize_url"] == "https://x.auth.eu-west-1.amazoncognito.com/oauth2/authorize"
    assert settings["token_url"] == "https://x.auth.eu-west-1.amazoncognito.com/oauth2/token"
    assert settings["client_id"] == "c1" and "openid" in settings["scope"].split()
    policy = page.content_security_policy("https://bucket.s3.amazonaws.com", settings)
    assert "connect-src 'self' https://x.auth.eu-west-1.amazoncognito.com;" in policy
    assert "img-src 'self' blob: data: https://bucket.s3.amazonaws.com;" in policy
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy


def test_a_value_cannot_close_the_config_element() -> None:
    html = page.page_html({"client_id": "</script><script>alert(1)</script>"})
    config = html.split('type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(config)["client_id"] == "</script><script>alert(1)</script>"


def test_only_the_pages_own_files_are_served() -> None:
    text, media_type = page.asset("review.js")
    assert media_type.startswith("text/javascript") and "dataset.predictionId" in text
    for name in ("../config.py", "review.html", "nope.js"):
        with pytest.raises(NotFoundError):
            page.asset(name)
