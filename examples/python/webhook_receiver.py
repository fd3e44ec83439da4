"""A webhook receiver for summary-gateway: verifies each delivery's Standard
Webhooks signature with the `standardwebhooks` package before trusting it.

The gateway POSTs the final summary resource to the `callback_url` a caller
gave, with `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
(docs/api.md, "Webhooks"). A delivery whose signature does not verify gets 401
(the gateway then retries it, as it does any non-2xx answer); a verified one
gets 204. Deduplicate on `webhook-id`: delivery is at least once.

client.py starts one of these in its own process. On its own:

    python webhook_receiver.py --listen 127.0.0.1:9000

prints one JSON line per delivery (secret: $SG_WEBHOOK_SECRET, default the
demo's).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

# The demo caller's secret (config/examples/demo.template.yaml): `whsec_` + base64.
DEMO_WEBHOOK_SECRET = "whsec_ZGVtby13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"


@dataclass
class Delivery:
    """One POST the receiver got, and whether its signature verified."""

    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None = None
    payload: Any = None


@dataclass
class Receiver:
    """An HTTP server on a thread of its own; deliveries arrive on `deliveries`."""

    secret: str = DEMO_WEBHOOK_SECRET
    host: str = "127.0.0.1"
    port: int = 0
    deliveries: "queue.Queue[Delivery]" = field(default_factory=queue.Queue)
    _seen: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        webhook = Webhook(self.secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                webhook_id = headers.get("webhook-id", "")
                try:
                    # The raw bytes as received: re-serialising the JSON first would break the signature.
                    payload = webhook.verify(body, headers)
                except WebhookVerificationError as err:
                    receiver.deliveries.put(Delivery(webhook_id, headers, body, False, str(err)))
                    self.send_response(401)
                    self.end_headers()
                    return
                # Acknowledge first-time and repeated deliveries alike; hand on each id once.
                first = webhook_id not in receiver._seen
                receiver._seen.add(webhook_id)
                self.send_response(204)
                self.end_headers()
                if first:
                    receiver.deliveries.put(Delivery(webhook_id, headers, body, True, None, payload))

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet: the client prints what matters

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/webhooks/summaries"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:9000", help="host:port (port 0: any free one)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    secret = os.environ.get("SG_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET)
    receiver = Receiver(secret=secret, host=host or "127.0.0.1", port=int(port)).start()
    print(f"receiving webhooks at {receiver.url}", file=sys.stderr, flush=True)
    try:
        while True:
            d = receiver.deliveries.get()
            status = d.payload.get("status") if isinstance(d.payload, dict) else None
            print(json.dumps({"webhook_id": d.webhook_id, "verified": d.verified, "error": d.error, "status": status}), flush=True)
    except KeyboardInterrupt:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
