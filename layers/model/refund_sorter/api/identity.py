"""Who is calling: the name a decision is recorded under (``review.by``).

In AWS every route is authenticated, so API Gateway always says who: a reviewer signed in through the Cognito
user pool (the review page's API) is named by the ID token's claims; a machine client by its IAM principal or
its API key. The local stack has no sign-in: there, everyone is ``local``.
"""

from __future__ import annotations

from typing import Any

LOCAL_REVIEWER = "local"


def caller_name(event: dict[str, Any]) -> str:
    """The caller of an API Gateway (REST, v1) proxy event, as a decision records it.

    Examples
    --------
    >>> caller_name({"requestContext": {"authorizer": {"claims": {"email": "ana@example.com"}}}})
    'ana@example.com'
    >>> caller_name({"requestContext": {"identity": {"apiKeyId": "k1"}}})
    'api-key:k1'
    >>> caller_name({"requestContext": {}})
    'local'
    """
    context = event.get("requestContext") or {}
    claims = (context.get("authorizer") or {}).get("claims") or {}
    # Reviewers sign in with their e-mail address; cognito:username is then an opaque id, so it comes second.
    for claim in ("email", "cognito:username"):
        if claims.get(claim):
            return str(claims[claim])
    identity = context.get("identity") or {}
    if identity.get("userArn"):
        return str(identity["userArn"])
    if identity.get("apiKeyId"):
        return f"api-key:{identity['apiKeyId']}"
    return LOCAL_REVIEWER
