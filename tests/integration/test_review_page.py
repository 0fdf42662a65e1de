"""The review page in a real browser (Debian's headless Chromium, driven by Playwright) against the local API and
moto: what a reviewer does — keys, clicks, what is on screen — and what ends up stored.

The page runs under its own Content-Security-Policy here too, so waits use selectors, never evaluated strings.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from refund_sorter.results import Status
from tests import chromium
from tests.integration.conftest import LocalAws, StartApi
from tests.review_data import informative_order, seed_queue, seed_ranked

if TYPE_CHECKING:
    from refund_sorter.results import Result

pytestmark = pytest.mark.browser

PHOTO = "img[data-prediction-id]"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = chromium.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def api(start_api: StartApi) -> str:
    return start_api()


def shown(page: Page) -> str:
    """The prediction on screen: the photo element's data-prediction-id, once it is fully loaded."""
    photo = page.locator(PHOTO)
    photo.wait_for()
    assert photo.evaluate("img => img.complete && img.naturalWidth > 0"), "the photo is on screen, decoded"
    return str(photo.get_attribute("data-prediction-id"))


def next_shown(page: Page, previous: str) -> str:
    page.wait_for_selector(f"{PHOTO}:not([data-prediction-id='{previous}'])")
    return shown(page)


def all_saved(page: Page) -> None:
    page.wait_for_selector("body[data-pending='0']", state="attached")


def decide_first_with_1(page: Page, api: str, first: Result) -> None:
    page.goto(f"{api}/review")
    assert shown(page) == first.id
    page.keyboard.press("1")
    next_shown(page, first.id)
    all_saved(page)


def stored(aws: LocalAws, result_id: str) -> Result:
    result = aws.store.get(result_id)
    assert result is not None
    return result


def refuse_decisions(route: Route) -> None:
    """The API unreachable for decisions (PATCH), as in an outage; everything else goes through."""
    if route.request.method == "PATCH":
        route.abort()
    else:
        route.continue_()


# ------------------------------------------------------------------------------------------------ deciding


def test_the_queue_loads_and_key_1_confirms_and_the_next_photo_shows(page: Page, api: str, aws: LocalAws) -> None:
    # GIVEN three photos waiting, oldest first
    first, second, third = seed_queue(aws.store, aws.bucket, 3)
    # WHEN a reviewer opens the page
    page.goto(f"{api}/review")
    # THEN the oldest photo is on screen with the model's departments as numbered buttons, and what is left
    assert shown(page) == first.id
    buttons = page.locator("#suggestions button")
    assert buttons.count() == len(first.top_departments)
    assert buttons.nth(0).get_attribute("data-department") == first.prediction
    assert page.locator("#hint").inner_text().startswith("Image model: ")
    expect(page.locator("#left-today")).to_have_text("3")  # counted once the first photo is on screen
    # WHEN they press 1: the model's own prediction
    page.keyboard.press("1")
    # THEN the next photo shows at once and the decision is stored
    assert next_shown(page, first.id) == second.id
    expect(page.locator("#done-today")).to_have_text("1")
    expect(page.locator("#left-today")).to_have_text("2")
    all_saved(page)
    decided = stored(aws, first.id)
    assert (decided.status, decided.department, decided.prediction) == (
        Status.REVIEWED,
        first.prediction,
        first.prediction,
    )
    assert decided.review is not None and decided.review.by == "local"
    # and a click works as well as a key: the second suggestion
    second_choice = second.top_departments[1].department
    page.locator("#suggestions button").nth(1).click()
    assert next_shown(page, second.id) == third.id
    all_saved(page)
    assert stored(aws, second.id).department == second_choice


def test_the_informative_order_shows_the_most_useful_photo_first_and_says_why(
    page: Page, api: str, aws: LocalAws
) -> None:
    # GIVEN photos waiting with priorities, and one stored before the queue had an order
    results = seed_ranked(aws.store, aws.bucket, 4) + seed_ranked(aws.store, aws.bucket, 1, ranked=False, start=4)
    order = informative_order(results)
    assert order != [r.id for r in results], "the informative order differs from the oldest-first one"
    by_id = {r.id: r for r in results}
    # WHEN a reviewer opens the page in the informative order
    page.goto(f"{api}/review?order=informative")
    # THEN the lowest priority is on screen first, with why it is asked, and the page names the order
    assert shown(page) == order[0]
    expect(page.locator("#why")).to_have_text(f"Asked because {by_id[order[0]].asked_because}")
    expect(page.locator("#queue-order")).to_have_attribute("data-order", "informative")
    # AND deciding goes on in that order, down to the photo without a priority, which still says why
    for previous, following in itertools.pairwise(order):
        page.keyboard.press("1")
        assert next_shown(page, previous) == following
    expect(page.locator("#why")).to_contain_text("Asked because ")
    all_saved(page)


def test_a_correction_through_the_chooser(page: Page, api: str, aws: LocalAws) -> None:
    first, second, _ = seed_queue(aws.store, aws.bucket, 3)
    page.goto(f"{api}/review")
    assert shown(page) == first.id
    # by keyboard: o, type, Enter
    page.keyboard.press("o")
    page.keyboard.type("pet")
    page.keyboard.press("Enter")
    assert next_shown(page, first.id) == second.id
    # by mouse: a click in the list
    page.locator("#chooser-list button[data-department='garden']").click()
    next_shown(page, second.id)
    all_saved(page)
    assert stored(aws, first.id).department == "pet_supplies"
    assert stored(aws, second.id).department == "garden"


def test_undo_brings_the_photo_back_and_keeps_the_trail(page: Page, api: str, aws: LocalAws) -> None:
    first, second, _ = seed_queue(aws.store, aws.bucket, 3)
    decide_first_with_1(page, api, first)
    page.keyboard.press("u")
    assert next_shown(page, second.id) == first.id
    expect(page.locator("#done-today")).to_have_text("0")
    all_saved(page)
    undone = stored(aws, first.id)
    assert undone.status is Status.NEEDS_REVIEW and undone.review is None
    assert [e.action for e in undone.review_history] == ["decided", "undone"]
    # decided again after the undo, with Backspace as the other undo key in between
    page.keyboard.press("2")
    next_shown(page, first.id)
    page.keyboard.press("Backspace")
    assert next_shown(page, second.id) == first.id
    page.keyboard.press("3")
    next_shown(page, first.id)
    all_saved(page)
    assert stored(aws, first.id).department == first.top_departments[2].department


def test_a_conflict_is_shown_and_the_reviewer_can_still_have_their_way(page: Page, api: str, aws: LocalAws) -> None:
    first, _, _ = seed_queue(aws.store, aws.bucket, 3)
    page.goto(f"{api}/review")
    assert shown(page) == first.id
    # GIVEN someone else decides the photo on screen first
    theirs = requests.patch(f"{api}/predictions/{first.id}", json={"category": "music"}, timeout=30)
    assert theirs.status_code == 200
    # WHEN this reviewer presses 1
    page.keyboard.press("1")
    next_shown(page, first.id)
    # THEN they are told plainly, and the other decision stands
    banner = page.locator("#banner")
    banner.wait_for()
    assert "Someone else decided this photo first" in banner.inner_text()
    assert "music" in banner.inner_text()
    all_saved(page)
    assert stored(aws, first.id).department == "music"
    assert page.locator("body[data-saved]").count() == 0, "the refused decision counts as not saved"
    # WHEN they insist
    page.locator("#banner-actions button").first.click()
    page.wait_for_selector("body[data-saved='1']", state="attached")
    mine = stored(aws, first.id)
    assert mine.department == first.prediction
    assert [e.department for e in mine.review_history] == ["music", first.prediction]


def test_with_the_api_down_no_decision_is_lost_even_across_a_reload(page: Page, api: str, aws: LocalAws) -> None:
    first, second, _ = seed_queue(aws.store, aws.bucket, 3)
    page.goto(f"{api}/review")
    assert shown(page) == first.id
    # GIVEN decisions cannot reach the API
    page.route(
        "**/predictions/*", lambda route: route.abort() if route.request.method == "PATCH" else route.continue_()
    )
    page.keyboard.press("1")
    # THEN the next photo still shows at once, and the page says the decision waits
    assert next_shown(page, first.id) == second.id
    outbox = page.locator("#outbox")
    outbox.wait_for()
    assert "1 decision waiting to be saved" in outbox.inner_text()
    assert stored(aws, first.id).status is Status.NEEDS_REVIEW
    # WHEN the API is back and the reviewer even reloads the page
    page.unroute("**/predictions/*")
    page.reload()
    # THEN the decision is saved after all
    all_saved(page)
    page.wait_for_selector(f"{PHOTO}[data-prediction-id='{second.id}']")
    assert stored(aws, first.id).department == first.prediction


def test_two_tabs_with_the_api_down_lose_no_decision(browser: Browser, api: str, aws: LocalAws) -> None:
    first, second, third, _ = seed_queue(aws.store, aws.bucket, 4)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    try:
        # GIVEN one reviewer with the page open in two tabs of one browser
        tab_a, tab_b = context.new_page(), context.new_page()
        for tab in (tab_a, tab_b):
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto(f"{api}/review")
            assert shown(tab) == first.id
        # WHEN the API cannot take decisions and tab A decides two photos
        context.route("**/predictions/*", refuse_decisions)
        tab_a.keyboard.press("1")
        assert next_shown(tab_a, first.id) == second.id
        tab_a.keyboard.press("1")
        assert next_shown(tab_a, second.id) == third.id
        # THEN tab B no longer offers them; it decides the next photo itself
        tab_b.wait_for_selector(f"{PHOTO}[data-prediction-id='{third.id}']")
        tab_b.keyboard.press("2")
        next_shown(tab_b, third.id)
        tab_b.wait_for_selector("body[data-pending='3']", state="attached")
        # WHEN tab A is closed while the API is still down, and then the API is back
        tab_a.close()
        assert stored(aws, first.id).status is Status.NEEDS_REVIEW
        context.unroute("**/predictions/*")
        # THEN every decision of both tabs is saved
        all_saved(tab_b)
        assert stored(aws, first.id).department == first.prediction
        assert stored(aws, second.id).department == second.prediction
        assert stored(aws, third.id).department == third.top_departments[1].department
        for result in (first, second, third):
            assert len(stored(aws, result.id).review_history) == 1, "each sent once: no conflict, no repeat"
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


def test_the_night_summary_renders(page: Page, api: str, aws: LocalAws) -> None:
    first, _, _ = seed_queue(aws.store, aws.bucket, 3)
    # the last nights as the Export step recorded them (nightly-trend.json): the share sorted alone is rising
    nights = [
        {"day": first.day, "run": f"run-{i}", "photos": 100, "auto_sorted_share": share, "review_rate": 1 - share,
         "review_backlog": 30 - 10 * i, "model_version": f"v{i}"}
        for i, share in enumerate((0.5, 0.6, 0.75))
    ]  # fmt: skip
    aws.bucket.put_bytes("nightly-trend.json", json.dumps(nights).encode())
    decide_first_with_1(page, api, first)
    page.keyboard.press("s")
    histogram = page.locator("svg#confidence-histogram")
    histogram.wait_for()
    assert histogram.locator("g.bar").count() == 10
    counted = sum(int(bar.get_attribute("data-count") or 0) for bar in histogram.locator("g.bar").all())
    assert counted == 3
    assert page.locator(".tile b").first.inner_text() == "3"
    assert "100 %" in page.locator("#summary-body").inner_text()  # review rate: all three were sent to a person
    assert page.locator("#summary-departments tbody tr").count() >= 1
    # AND the trend: one point and one row per night, newest row first, and the change in words
    assert page.locator("svg#trend-chart circle.night").count() == 3
    rows = page.locator("#summary-trend tbody tr")
    assert rows.count() == 3 and rows.first.get_attribute("data-day") == first.day
    assert "75 %" in rows.first.inner_text() and "v2" in rows.first.inner_text()
    assert "+25 points" in page.locator("#trend-words").inner_text()
    page.keyboard.press("Escape")
    page.wait_for_selector("#review-view", state="visible")


def test_an_empty_queue_says_so(page: Page, api: str) -> None:
    page.goto(f"{api}/review")
    page.wait_for_selector("#empty-view", state="visible")
    assert "Nothing left to review" in page.locator("#empty-view").inner_text()


# ------------------------------------------------------------------------------------------------ signing in


class FakeSignIn(ThreadingHTTPServer):
    """Cognito's hosted sign-in, as far as the page sees it: /oauth2/authorize and /oauth2/token, on 127.0.0.1.

    It checks what Cognito checks for a public client with PKCE: the client id, the redirect URI, S256, and that
    the verifier sent with the code hashes to the challenge sent with the authorize request."""

    client_id = "review-page-test-client"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SignInHandler)
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.logout_requests: list[dict[str, str]] = []
        self.challenges: dict[str, str] = {}  # code → code_challenge
        self.issued: set[str] = set()  # every ID token handed out: the authorizer takes each
        self.redirect_uri = ""
        self.become("ana@example.com", "ana")

    def become(self, email: str, username: str) -> None:
        """Whoever signs in next on the hosted page is this person (their own subject, as in Cognito)."""
        self.email = email
        claims = {"sub": f"sub-{username}", "email": email, "cognito:username": username, "token_use": "id"}
        self.id_token = _unsigned_jwt(claims)
        self.issued.add(self.id_token)


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


class _SignInHandler(BaseHTTPRequestHandler):
    server: FakeSignIn

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/logout":  # Cognito's sign-out: back to the page, signed out
            self.server.logout_requests.append(query)
            back = query.get("logout_uri")
            known = query.get("client_id") == self.server.client_id and back == self.server.redirect_uri
            self.send_response(302 if known else 400)
            if known:
                self.send_header("Location", self.server.redirect_uri)
            self.end_headers()
            return
        self.server.authorize_requests.append(query)
        valid = (
            url.path == "/oauth2/authorize"
            and query.get("response_type") == "code"
            and query.get("client_id") == self.server.client_id
            and query.get("redirect_uri") == self.server.redirect_uri
            and query.get("code_challenge_method") == "S256"
            and len(query.get("code_challenge", "")) == 43
            and "openid" in query.get("scope", "").split()
            and query.get("state")
        )
        if not valid:
            self.send_response(400)
            self.end_headers()
            return
        code = f"code-{len(self.server.challenges)}"
        self.server.challenges[code] = query["code_challenge"]
        self.send_response(302)
        self.send_header("Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}")
        self.end_headers()

    def do_POST(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
        self.server.token_requests.append(form)
        challenge = self.server.challenges.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        proof = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        valid = (
            urlsplit(self.path).path == "/oauth2/token"
            and form.get("grant_type") == "authorization_code"
            and form.get("client_id") == self.server.client_id
            and form.get("redirect_uri") == self.server.redirect_uri
            and challenge is not None
            and proof == challenge
        )
        body = (
            {"id_token": self.server.id_token, "access_token": "a", "refresh_token": "r", "expires_in": 3600}
            if valid
            else {"error": "invalid_grant"}
        )
        self.send_response(200 if valid else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")  # as Cognito's token endpoint answers a page
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())


@pytest.fixture
def sign_in() -> Iterator[FakeSignIn]:
    server = FakeSignIn()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def signed_api(start_api: StartApi, sign_in: FakeSignIn) -> tuple[str, list[tuple[str, str | None]]]:
    """The review API as API Gateway would run it in AWS: the stage names the sign-in service, and the Cognito
    authorizer puts the ID token's claims in the event (here: when the token is the one the service issued)."""
    calls: list[tuple[str, str | None]] = []

    def as_api_gateway(event: dict[str, Any]) -> None:
        event["stageVariables"] = {"signInUrl": sign_in.url, "signInClientId": sign_in.client_id}
        token = (event.get("headers") or {}).get("Authorization")
        calls.append((event["path"], token))
        if token in sign_in.issued:
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            event["requestContext"]["authorizer"] = {"claims": claims}

    url = start_api(as_api_gateway)
    sign_in.redirect_uri = f"{url}/review"
    return url, calls


def test_sign_in_with_pkce_then_decisions_are_recorded_under_the_reviewer(
    page: Page, signed_api: tuple[str, list[tuple[str, str | None]]], sign_in: FakeSignIn, aws: LocalAws
) -> None:
    api, calls = signed_api
    first, _ = seed_queue(aws.store, aws.bucket, 2)
    # WHEN a reviewer opens the page: off to the sign-in service and back with a code
    page.goto(f"{api}/review")
    assert shown(page) == first.id
    # THEN the page asked for a code with a fresh PKCE challenge and state, and redeemed it with the verifier
    (authorize,) = sign_in.authorize_requests
    (token,) = sign_in.token_requests
    assert authorize["redirect_uri"] == f"{api}/review" and token["redirect_uri"] == f"{api}/review"
    assert 43 <= len(token["code_verifier"]) <= 128
    assert page.url == f"{api}/review", "no code or state left in the address bar"
    assert page.locator("#user").inner_text() == sign_in.email
    # every API call carried the ID token; only the page's own files went without
    for path, sent in calls:
        assert sent == sign_in.id_token or path.startswith("/review"), path
    # WHEN they decide, the decision is theirs
    page.keyboard.press("1")
    next_shown(page, first.id)
    all_saved(page)
    decided = stored(aws, first.id)
    assert decided.review is not None and decided.review.by == sign_in.email


def test_a_sign_in_answer_that_is_not_for_this_page_is_refused(
    page: Page, signed_api: tuple[str, list[tuple[str, str | None]]], sign_in: FakeSignIn
) -> None:
    api, _ = signed_api
    # a code and state this page never asked for (e.g. a link someone sent)
    page.goto(f"{api}/review?code=stolen&state=forged")
    banner = page.locator("#banner")
    banner.wait_for()
    assert "state mismatch" in banner.inner_text()
    assert sign_in.token_requests == [], "the code was never redeemed"
    assert page.locator(PHOTO).count() == 0


def test_a_reviewers_waiting_decisions_are_kept_and_never_sent_under_another_reviewers_sign_in(
    page: Page, signed_api: tuple[str, list[tuple[str, str | None]]], sign_in: FakeSignIn, aws: LocalAws
) -> None:
    api, calls = signed_api
    first, _, _ = seed_queue(aws.store, aws.bucket, 3)
    decision = f"/predictions/{first.id}"
    ana = sign_in.id_token
    # GIVEN Ana decides the first photo while the API cannot take decisions
    page.goto(f"{api}/review")
    assert shown(page) == first.id
    page.route("**/predictions/*", refuse_decisions)
    page.keyboard.press("1")
    next_shown(page, first.id)
    page.wait_for_selector("body[data-pending='1']", state="attached")
    # WHEN she signs out, the API is back, and Ben signs in in the same browser and decides that photo himself
    page.unroute("**/predictions/*")
    sign_in.become("ben@example.com", "ben")
    ben = sign_in.id_token
    page.locator("#sign-out").click()
    expect(page.locator("#user")).to_have_text("ben@example.com")
    assert shown(page) == first.id, "Ana's decision was not sent: the photo still waits"
    assert page.locator("body[data-pending='0']").count() == 1, "Ben's outbox holds nothing of Ana's"
    ben_choice = first.top_departments[1].department
    page.keyboard.press("2")
    next_shown(page, first.id)
    page.wait_for_selector("body[data-saved='1']", state="attached")
    # THEN his decision is his, and Ana's was never sent with his token
    decided = stored(aws, first.id)
    assert decided.review is not None and decided.review.by == "ben@example.com"
    assert [e.department for e in decided.review_history] == [ben_choice]
    assert calls.count((decision, ben)) == 1
    # WHEN Ben signs out and Ana signs in again
    sign_in.become("ana@example.com", "ana")
    page.locator("#sign-out").click()
    expect(page.locator("#user")).to_have_text("ana@example.com")
    # THEN her kept decision is sent, with her token, and she is told Ben decided the photo first
    banner = page.locator("#banner")
    banner.wait_for()
    assert "Someone else decided this photo first" in banner.inner_text()
    assert (decision, ana) in calls
    all_saved(page)
    assert [len(sign_in.logout_requests), stored(aws, first.id).review_history[-1].department] == [2, ben_choice]
