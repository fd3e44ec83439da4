"""A summary-gateway client in Python (httpx), run against `summary-gateway demo`.

    python client.py [BASE_URL]        # or SG_URL=...; default http://127.0.0.1:8080

It goes through what a caller does (docs/api.md):
  1. create a CommBox summary (202 + Location), wait for it with ?wait=, print it;
  2. send two bad requests and branch on the problem+json `code`;
  3. ask for a summary with a `callback_url` pointing at a receiver in this
     process, verify the delivery's signature with `standardwebhooks`, and check
     that a tampered body fails verification;
  4. run into the key's rate limit and honour Retry-After (bounded retries).

Every request goes through Gateway.request, which retries a 429 (or a 503 with
Retry-After) after the time the gateway names, at most MAX_ATTEMPTS times and
never waiting longer than MAX_WAIT at once. Step 3 needs a gateway that accepts
loopback callback URLs: start the demo with
SUMMARY_GATEWAY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true.

stdout gets one JSON line per step (what the test suite checks), stderr a
readable account. Exit status 0 only if every step did what it should.
Environment: SG_URL, SG_API_KEY (default demo-key), SG_WEBHOOK_SECRET (default
the demo's).
"""

from __future__ import annotations

import email.utils
import json
import os
import queue
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin

import httpx
from standardwebhooks import Webhook, WebhookVerificationError

from webhook_receiver import DEMO_WEBHOOK_SECRET, Receiver

DEFAULT_URL = "http://127.0.0.1:8080"
DEMO_KEY = "demo-key"
# Retry policy for 429 and 503: attempts in all, and the longest single wait we accept.
MAX_ATTEMPTS = 5
MAX_WAIT = 30.0
RETRYABLE = {429, 503}

CONVERSATION = (
    "Agent: Good morning, Acme support. Client: Hi, my March invoice was charged twice and I "
    "would like the duplicate refunded. Agent: I see it, I have refunded the duplicate charge."
)


class Problem(Exception):
    """An RFC 9457 problem+json answer. Programs branch on `code`; `detail` is for people."""

    def __init__(self, status: int, body: dict[str, Any], headers: httpx.Headers) -> None:
        self.status = status
        self.code: str | None = body.get("code")
        self.detail: str | None = body.get("detail")
        self.request_id: str | None = body.get("request_id") or headers.get("x-request-id")
        self.body = body
        super().__init__(f"{status} {self.code}: {self.detail} (request {self.request_id})")

    @classmethod
    def from_response(cls, response: httpx.Response) -> "Problem":
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/problem+json"):
            try:
                body = response.json()
            except ValueError:
                body = {}
        else:
            # Not the gateway's own answer (a proxy in between, say): keep what there is.
            body = {"detail": response.text[:200]}
        return cls(response.status_code, body, response.headers)


def retry_delay(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before retrying: Retry-After (seconds or an HTTP date), else
    RateLimit-Reset, else exponential backoff."""
    retry_after = response.headers.get("retry-after")
    if retry_after:
        if retry_after.strip().isdigit():
            return float(retry_after)
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            pass
    reset = response.headers.get("ratelimit-reset")
    if reset and reset.strip().isdigit():
        return float(reset)
    return float(min(2 ** (attempt - 1), MAX_WAIT))


OnRetry = Callable[[httpx.Response, int, float], None]


class Gateway:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url.rstrip("/")
        # Reads may be held up to 60 s by ?wait= / Prefer: wait: give them longer than that.
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(10.0, read=75.0),
        )

    def request(self, method: str, path: str, *, on_retry: OnRetry | None = None, **kwargs: Any) -> httpx.Response:
        """One call, retried on 429/503 as the gateway asks; an error answer raises Problem."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self.http.request(method, path, **kwargs)
            if response.status_code not in RETRYABLE or attempt == MAX_ATTEMPTS:
                break
            if response.status_code == 503 and "retry-after" not in response.headers:
                break  # down without a hint when to come back: not ours to hammer
            delay = retry_delay(response, attempt)
            if delay > MAX_WAIT:
                break  # longer than we are willing to hold the caller: give up now
            (on_retry or log_retry)(response, attempt, delay)
            time.sleep(delay)
        if response.is_error:
            raise Problem.from_response(response)
        return response

    def create_summary(self, body: dict[str, Any]) -> httpx.Response:
        return self.request("POST", "/v1/summaries", json=body)

    def wait_for(self, location: str, wait: int = 10, rounds: int = 6) -> dict[str, Any]:
        """Follow a 202's Location with ?wait= until the summary is final."""
        url = urljoin(self.base_url + "/", location)
        for _ in range(rounds):
            resource = self.request("GET", url, params={"wait": wait}).json()
            if resource["status"] != "pending":
                return resource
        raise TimeoutError(f"{location} still pending after {rounds} waits of {wait} s")


def log_retry(response: httpx.Response, attempt: int, delay: float) -> None:
    h = response.headers
    say(
        f"  {response.status_code}: Retry-After {h.get('retry-after')}, RateLimit-Limit {h.get('ratelimit-limit')}, "
        f"-Remaining {h.get('ratelimit-remaining')}, -Reset {h.get('ratelimit-reset')}; "
        f"waiting {delay:g} s (attempt {attempt} of {MAX_ATTEMPTS})"
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def commbox_request(text: str, callback_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"provider": "commbox-demo", "language": "en", "conversation": {"text": text}}
    if callback_url:
        body["callback_url"] = callback_url
    return body


def step_summary(gw: Gateway) -> bool:
    say("1. a CommBox summary (asynchronous)")
    response = gw.create_summary(commbox_request(CONVERSATION))
    if response.status_code == 202:
        pending = response.json()
        say(f"  202 {pending['id']} pending; Location {response.headers['location']}, Retry-After {response.headers.get('retry-after')}")
        resource = gw.wait_for(response.headers["location"])
    else:
        resource = response.json()  # already final: the same request was summarised before
        say(f"  {response.status_code} from the store ({response.headers.get('cache-status')})")
    say(f"  {resource['status']}:\n" + "\n".join("    " + line for line in (resource["content"] or {}).get("markdown", "").splitlines()))
    emit("summary", id=resource["id"], status=resource["status"], summary=resource)
    return resource["status"] == "completed"


def step_problems(gw: Gateway) -> bool:
    say("2. problem+json errors")
    bad = [
        ("an unknown provider", {"provider": "no-such-provider", "conversation": {"text": CONVERSATION}}),
        ("a body without conversation", {"provider": "commbox-demo"}),
    ]
    ok = True
    for what, body in bad:
        try:
            gw.create_summary(body)
        except Problem as problem:
            if problem.code == "unknown_provider":
                say(f"  {what}: {problem.status} {problem.code} — ask GET /v1/providers for the names")
            elif problem.code == "invalid_request":
                say(f"  {what}: {problem.status} {problem.code} — fix the request: {problem.detail}")
            else:
                say(f"  {what}: {problem}")
            emit("problem", status=problem.status, code=problem.code, request_id=problem.request_id)
        else:
            say(f"  {what} was accepted?")
            ok = False
    return ok


def step_webhook(gw: Gateway, secret: str) -> bool:
    say("3. a webhook, its signature verified")
    receiver = Receiver(secret=secret).start()
    try:
        # A conversation of its own, so the summary is pending when we ask (a final one
        # comes in the answer itself, and no webhook follows).
        text = f"{CONVERSATION} Client: Thank you. (ticket {uuid.uuid4()})"
        try:
            response = gw.create_summary(commbox_request(text, receiver.url))
        except Problem as problem:
            if problem.code == "invalid_callback_url":
                say(f"  {problem}\n  (start the demo with SUMMARY_GATEWAY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true to allow {receiver.url})")
            raise
        created = response.json()
        if response.status_code != 202:
            say(f"  {response.status_code}: the summary was already final, no webhook will come")
            return False
        say(f"  202 {created['id']}; waiting for the delivery at {receiver.url}")
        try:
            delivery = receiver.deliveries.get(timeout=60)
        except queue.Empty:
            say("  no delivery within 60 s")
            emit("webhook", verified=False, error="no delivery")
            return False
        if not delivery.verified:
            say(f"  a delivery did not verify: {delivery.error}")
            emit("webhook", verified=False, error=delivery.error)
            return False
        resource = delivery.payload
        say(f"  webhook {delivery.webhook_id} verified: {resource['id']} {resource['status']}")
        # The same delivery with its body changed must not verify.
        tampered = delivery.body.replace(b'"status":"completed"', b'"status":"failed"', 1)
        if tampered == delivery.body:
            tampered = delivery.body + b" "
        try:
            Webhook(secret).verify(tampered, delivery.headers)
            tampered_rejected = False
            say("  the tampered body verified too!")
        except WebhookVerificationError as err:
            tampered_rejected = True
            say(f"  the tampered body was rejected: {err}")
        emit(
            "webhook",
            verified=True,
            tampered_rejected=tampered_rejected,
            webhook_id=delivery.webhook_id,
            id=resource["id"],
            status=resource["status"],
        )
        return tampered_rejected and resource["id"] == created["id"] and resource["status"] == "completed"
    finally:
        receiver.stop()


def step_rate_limit(gw: Gateway) -> bool:
    say("4. the rate limit: requests in a row until a 429, which is waited out")
    retries: list[dict[str, Any]] = []

    def on_retry(response: httpx.Response, attempt: int, delay: float) -> None:
        log_retry(response, attempt, delay)
        h = response.headers
        retries.append(
            {
                "status": response.status_code,
                "code": Problem.from_response(response).code,
                "retry_after": h.get("retry-after"),
                "ratelimit_limit": h.get("ratelimit-limit"),
                "ratelimit_remaining": h.get("ratelimit-remaining"),
                "ratelimit_reset": h.get("ratelimit-reset"),
                "delay": delay,
            }
        )

    limit = 1000  # bounded: a key this many requests do not exhaust is not limited enough to show
    for n in range(1, limit + 1):
        started = time.monotonic()
        response = gw.request("GET", "/v1/providers", on_retry=on_retry)
        if retries:
            waited = time.monotonic() - started
            say(f"  request {n} was limited; after {waited:.1f} s it got {response.status_code}")
            emit(
                "rate_limit",
                limited=True,
                requests=n,
                first=retries[0],
                retries=len(retries),
                waited=round(waited, 3),
                final_status=response.status_code,
            )
            return response.status_code == 200
    say(f"  {limit} requests and no 429: this key's limit is too high to show")
    emit("rate_limit", limited=False, requests=limit)
    return False


def main() -> int:
    base_url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SG_URL", DEFAULT_URL)
    key = os.environ.get("SG_API_KEY", DEMO_KEY)
    secret = os.environ.get("SG_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET)
    gw = Gateway(base_url, key)
    say(f"summary-gateway at {base_url}")
    results = {}
    try:
        results["summary"] = step_summary(gw)
        results["problem"] = step_problems(gw)
        results["webhook"] = step_webhook(gw, secret)
        results["rate_limit"] = step_rate_limit(gw)
    except Problem as problem:
        say(f"unexpected error: {problem}")
        emit("error", status=problem.status, code=problem.code, detail=problem.detail)
        return 1
    except (httpx.HTTPError, TimeoutError) as err:
        say(f"cannot talk to {base_url}: {err!r}")
        emit("error", detail=repr(err))
        return 1
    ok = all(results.values())
    emit("done", ok=ok, results=results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
