/**
 * A webhook receiver for summary-gateway, and the Standard Webhooks signature
 * check it applies to every delivery before trusting it.
 *
 * The gateway POSTs the final summary resource to the `callback_url` a caller
 * gave, with `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
 * (docs/api.md, "Webhooks"): the signature is `v1,` + base64 of HMAC-SHA256 over
 * `${id}.${timestamp}.${body}`, keyed with the base64-decoded part of the
 * caller's `whsec_` secret. A delivery that does not verify gets 401 (the gateway
 * retries it, as it does any non-2xx answer); a verified one 204. Deduplicate on
 * `webhook-id`: delivery is at least once.
 *
 * client.ts starts one of these in its own process. On its own:
 *
 *     npx tsx webhook_receiver.ts --listen 127.0.0.1:9000
 *
 * prints one JSON line per delivery (secret: $SG_WEBHOOK_SECRET, default the demo's).
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

/** The demo caller's secret (config/examples/demo.template.yaml): `whsec_` + base64. */
export const DEMO_WEBHOOK_SECRET = "whsec_ZGVtby13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm";

/** How far a delivery's timestamp may be from our clock (Standard Webhooks suggests 5 minutes). */
const TOLERANCE_SECONDS = 5 * 60;

export class WebhookVerificationError extends Error {
  override name = "WebhookVerificationError";
}

/** Lower-cased header name → its value (the first, if it came more than once). */
export type Headers = Record<string, string>;

/**
 * Verifies one delivery and returns its parsed body; throws WebhookVerificationError.
 * `body` must be the raw bytes as received: re-serialised JSON would not match.
 */
export function verifyWebhook(secret: string, headers: Headers, body: Buffer, now: Date = new Date()): unknown {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^\d+$/.test(timestamp)) {
    throw new WebhookVerificationError(`unreadable webhook-timestamp ${JSON.stringify(timestamp)}`);
  }
  const age = Math.floor(now.getTime() / 1000) - Number(timestamp);
  if (Math.abs(age) > TOLERANCE_SECONDS) {
    throw new WebhookVerificationError(`webhook-timestamp ${timestamp} is ${age} s away from now`);
  }
  const key = Buffer.from(secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret, "base64");
  if (key.length === 0) {
    throw new WebhookVerificationError("empty webhook secret");
  }
  const expected = createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body).digest();
  // Several signatures may be sent (during a secret rotation): any v1 one that matches will do.
  for (const versioned of signatures.split(" ")) {
    const [version, signature] = versioned.split(",", 2);
    if (version !== "v1" || signature === undefined) continue;
    const given = Buffer.from(signature, "base64");
    if (given.length === expected.length && timingSafeEqual(given, expected)) {
      return JSON.parse(body.toString("utf8"));
    }
  }
  throw new WebhookVerificationError("no matching signature");
}

/** One POST the receiver got, and whether it verified. */
export interface Delivery {
  webhookId: string;
  headers: Headers;
  body: Buffer;
  verified: boolean;
  error: string | null;
  payload: unknown;
}

/** An HTTP server on 127.0.0.1; `next()` resolves with each new delivery. */
export class Receiver {
  readonly #secret: string;
  readonly #server: Server;
  readonly #seen = new Set<string>();
  readonly #queue: Delivery[] = [];
  #waiting: ((d: Delivery) => void) | null = null;

  private constructor(secret: string, server: Server) {
    this.#secret = secret;
    this.#server = server;
  }

  static async start(secret: string = DEMO_WEBHOOK_SECRET, host = "127.0.0.1", port = 0): Promise<Receiver> {
    const server = createServer();
    const receiver = new Receiver(secret, server);
    server.on("request", (req, res) => {
      void readBody(req).then(
        (body) => {
          const status = receiver.#receive(headersOf(req), body);
          res.writeHead(status).end();
        },
        () => res.writeHead(400).end(),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    return receiver;
  }

  get url(): string {
    const { address, port } = this.#server.address() as AddressInfo;
    return `http://${address}:${port}/webhooks/summaries`;
  }

  /** The next delivery, or null after `timeoutMs`. */
  next(timeoutMs: number): Promise<Delivery | null> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting = null;
        resolve(null);
      }, timeoutMs);
      this.#waiting = (d) => {
        clearTimeout(timer);
        this.#waiting = null;
        resolve(d);
      };
    });
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #receive(headers: Headers, body: Buffer): number {
    const webhookId = headers["webhook-id"] ?? "";
    let delivery: Delivery;
    try {
      const payload = verifyWebhook(this.#secret, headers, body);
      if (this.#seen.has(webhookId)) return 204; // a repeat: acknowledged, handled once
      this.#seen.add(webhookId);
      delivery = { webhookId, headers, body, verified: true, error: null, payload };
    } catch (err) {
      if (!(err instanceof WebhookVerificationError)) throw err;
      delivery = { webhookId, headers, body, verified: false, error: err.message, payload: null };
    }
    if (this.#waiting) this.#waiting(delivery);
    else this.#queue.push(delivery);
    return delivery.verified ? 204 : 401;
  }
}

function headersOf(req: IncomingMessage): Headers {
  const headers: Headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? (value[0] ?? "") : value;
  }
  return headers;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

// Run on its own: print every delivery.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf("--listen");
  const listen = at >= 0 ? (process.argv[at + 1] ?? "") : "127.0.0.1:9000";
  const split = listen.lastIndexOf(":");
  const host = split > 0 ? listen.slice(0, split) : "127.0.0.1";
  const port = Number(listen.slice(split + 1));
  const receiver = await Receiver.start(process.env["SG_WEBHOOK_SECRET"] ?? DEMO_WEBHOOK_SECRET, host, port);
  console.error(`receiving webhooks at ${receiver.url}`);
  for (;;) {
    const d = await receiver.next(3_600_000);
    if (!d) continue;
    const status = (d.payload as { status?: string } | null)?.status ?? null;
    console.log(JSON.stringify({ webhook_id: d.webhookId, verified: d.verified, error: d.error, status }));
  }
}
