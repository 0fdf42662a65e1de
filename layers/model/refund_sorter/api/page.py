"""The review page: HTML, CSS and JS shipped as package data (``static/``) and served by the API itself.

No CDN and no build step: the files are what the browser runs. The HTML carries the sign-in settings (empty on
the local stack, where nobody signs in) as a JSON data block, and is served with a Content-Security-Policy that
lets it load scripts and styles only from the API, photos only from the bucket's presigned links, and talk only
to the API and the sign-in service.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

from refund_sorter.errors import NotFoundError

# Every file the page may load, with its media type; anything else under /review/ is a 404.
ASSETS: Final = {
    "review.css": "text/css; charset=utf-8",
    "review.js": "text/javascript; charset=utf-8",
    "sign-in.js": "text/javascript; charset=utf-8",
    "summary.js": "text/javascript; charset=utf-8",
}
# Stage variables of the review API (infra/template.yaml, ReviewApi): where reviewers sign in.
SIGN_IN_URL_VARIABLE: Final = "signInUrl"
SIGN_IN_CLIENT_VARIABLE: Final = "signInClientId"
_CONFIG_PLACEHOLDER: Final = "{{SIGN_IN}}"


@cache
def _static(name: str) -> str:
    return (resources.files("refund_sorter.api") / "static" / name).read_text(encoding="utf-8")


def asset(name: str) -> tuple[str, str]:
    """One of the page's files: its text and media type."""
    if name not in ASSETS:
        raise NotFoundError(f"the review page has no file {name!r}")
    return _static(name), ASSETS[name]


def sign_in_settings(stage_variables: dict[str, str] | None) -> dict[str, str] | None:
    """The hosted sign-in (Cognito, authorization code + PKCE) the page uses, or ``None``: no sign-in."""
    variables = stage_variables or {}
    base, client_id = variables.get(SIGN_IN_URL_VARIABLE), variables.get(SIGN_IN_CLIENT_VARIABLE)
    if not base or not client_id:
        return None
    base = base.rstrip("/")
    return {
        "authorize_url": f"{base}/oauth2/authorize",
        "token_url": f"{base}/oauth2/token",
        "logout_url": f"{base}/logout",
        "client_id": client_id,
        "scope": "openid email profile",
    }


def page_html(sign_in: dict[str, str] | None) -> str:
    # JSON inside <script>: "<" escaped so no value can close the element.
    config = json.dumps(sign_in or {}).replace("<", "\\u003c")
    return _static("review.html").replace(_CONFIG_PLACEHOLDER, config)


def content_security_policy(photo_origin: str, sign_in: dict[str, str] | None) -> str:
    """Scripts and styles from the API only; photos from the bucket; requests to the API and the sign-in service."""
    connect = ["'self'"]
    if sign_in:
        connect.append(_origin(sign_in["token_url"]))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' blob: data: {photo_origin}",
            f"connect-src {' '.join(connect)}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
