/**
 * A summary-gateway client in TypeScript on Node 20's built-in fetch, run against
 * `summary-gateway demo`.
 *
 *     npx tsx client.ts [BASE_URL]        # or SG_URL=...; default http://127.0.0.1:8080
 *
 * It goes through what a caller does (docs/api.md):
 *   1. create a CommBox summary (202 + Location), wait for it with ?wait=, print it;
 *   2. send two bad requests and branch on the problem+json `code`;
 *   3. ask for a summary with a `callback_url` pointing at a receiver in this
 *      process, verify the delivery's Standard Webhooks signature
 *      (webhook_receiver.ts), and check that a tampered body fails verification;
 *   4. run into the key's rate limit and honour Retry-After (bounded retries).
 *
 * Every request goes through Gateway.request, which retries a 429 (or a 503 with
 * Retry-After) after the time the gateway names, at most MAX_ATTEMPTS times and
 * never waiting longer than MAX_WAIT_S at once. Step 3 needs a gateway that
 * accepts loopback callback URLs: start the demo with
 * SUMMARY_GATEWAY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true.
 *
 * stdout gets one JSON line per step (what the test suite checks), stderr a
 * readable account. Exit status 0 only if every step did what it should.
 * Environment: SG_URL, SG_API_KEY (default demo-key), SG_WEBHOOK_SECRET (default the demo's).
 */

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { DEMO_WEBHOOK_SECRET, Receiver, WebhookVerificationError, verifyWebhook } from "./webhook_receiver.ts";

const DEFAULT_URL = "http://127.0.0.1:8080";
const DEMO_KEY = "demo-key";
/** Retry policy for 429 and 503: attempts in all, and the longest single wait we accept. */
const MAX_ATTEMPTS = 5;
const MAX_WAIT_S = 30;
const RETRYABLE = new Set([429, 503]);
/** Reads may be held up to 60 s by ?wait= / Prefer: wait: give them longer than that. */
const REQUEST_TIMEOUT_MS = 75_000;

const CONVERSATION =
  "Agent: Good morning, Acme support. Client: Hi, my March invoice was charged twice and I " +
  "would like the duplicate refunded. Agent: I see it, I have refunded the duplicate charge.";

/** The summary resource (docs/api.md, "The summary resource"), the fields used here. */
interface Summary {
  id: string;
  status: "pending" | "completed" | "failed";
  provider: string;
  kind: string;
  content: { text: string; markdown: string; sections: { title: string; items: string[] }[] } | null;
  error: { code: string; message: string } | null;
  [field: string]: unknown;
}

/** An RFC 9457 problem+json body. */
interface ProblemBody {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  request_id?: string;
}

/** An error answer. Programs branch on `code`; `detail` is for people. */
class Problem extends Error {
  override name = "Problem";
  constructor(
    readonly status: number,
    readonly code: string | null,
    readonly detail: string | null,
    readonly requestId: string | null,
  ) {
    super(`${status} ${code}: ${detail} (request ${requestId})`);
  }

  static async from(response: Response): Promise<Problem> {
    const text = await response.text();
    let body: ProblemBody = {};
    if ((response.headers.get("content-type") ?? "").startsWith("application/problem+json")) {
      try {
        body = JSON.parse(text) as ProblemBody;
      } catch {
        // unreadable: keep the status
      }
    } else {
      // Not the gateway's own answer (a proxy in between, say): keep what there is.
      body = { detail: text.slice(0, 200) };
    }
    return new Problem(
      response.status,
      body.code ?? null,
      body.detail ?? null,
      body.request_id ?? response.headers.get("x-request-id"),
    );
  }
}

/** Seconds to wait before retrying: Retry-After (seconds or an HTTP date), else RateLimit-Reset, else backoff. */
function retryDelay(response: Response, attempt: number): number {
  const retryAfter = response.headers.get("retry-after")?.trim();
  if (retryAfter) {
    if (/^\d+$/.test(retryAfter)) return Number(retryAfter);
    const when = Date.parse(retryAfter);
    if (!Number.isNaN(when)) return Math.max(0, (when - Date.now()) / 1000);
  }
  const reset = response.headers.get("ratelimit-reset")?.trim();
  if (reset && /^\d+$/.test(reset)) return Number(reset);
  return Math.min(2 ** (attempt - 1), MAX_WAIT_S);
}

type OnRetry = (response: Response, attempt: number, delay: number) => Promise<void> | void;

interface RequestOptions {
  body?: unknown;
  query?: Record<string, string>;
  onRetry?: OnRetry;
}

class Gateway {
  readonly baseUrl: string;
  readonly #key: string;

  constructor(baseUrl: string, key: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#key = key;
  }

  /** One call, retried on 429/503 as the gateway asks; an error answer throws Problem. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const url = new URL(path, this.baseUrl + "/");
    for (const [k, v] of Object.entries(options.query ?? {})) url.searchParams.set(k, v);
    const headers: Record<string, string> = { authorization: `Bearer ${this.#key}` };
    if (options.body !== undefined) headers["content-type"] = "application/json";
    for (let attempt = 1; ; attempt++) {
      const response = await fetch(url, {
        method,
        headers,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const retry =
        RETRYABLE.has(response.status) &&
        attempt < MAX_ATTEMPTS &&
        // 503 without a hint when to come back: not ours to hammer.
        (response.status === 429 || response.headers.has("retry-after"));
      const delay = retry ? retryDelay(response, attempt) : 0;
      if (!retry || delay > MAX_WAIT_S) {
        if (!response.ok) throw await Problem.from(response);
        return response;
      }
      await (options.onRetry ?? logRetry)(response, attempt, delay);
      if (!response.bodyUsed) await response.body?.cancel(); // not read: free the connection
      await sleep(delay * 1000);
    }
  }

  createSummary(body: unknown): Promise<Response> {
    return this.request("POST", "/v1/summaries", { body });
  }

  /** Follows a 202's Location with ?wait= until the summary is final. */
  async waitFor(location: string, wait = 10, rounds = 6): Promise<Summary> {
    for (let i = 0; i < rounds; i++) {
      const resource = (await (await this.request("GET", location, { query: { wait: String(wait) } })).json()) as Summary;
      if (resource.status !== "pending") return resource;
    }
    throw new Error(`${location} still pending after ${rounds} waits of ${wait} s`);
  }
}

function logRetry(response: Response, attempt: number, delay: number): void {
  const h = response.headers;
  say(
    `  ${response.status}: Retry-After ${h.get("retry-after")}, RateLimit-Limit ${h.get("ratelimit-limit")}, ` +
      `-Remaining ${h.get("ratelimit-remaining")}, -Reset ${h.get("ratelimit-reset")}; ` +
      `waiting ${delay} s (attempt ${attempt} of ${MAX_ATTEMPTS})`,
  );
}

function say(text: string): void {
  process.stderr.write(text + "\n");
}

function emit(step: string, fields: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

function commboxRequest(text: string, callbackUrl?: string): Record<string, unknown> {
  return {
    provider: "commbox-demo",
    language: "en",
    conversation: { text },
    ...(callbackUrl ? { callback_url: callbackUrl } : {}),
  };
}

async function stepSummary(gw: Gateway): Promise<boolean> {
  say("1. a CommBox summary (asynchronous)");
  const response = await gw.createSummary(commboxRequest(CONVERSATION));
  let resource: Summary;
  const location = response.headers.get("location");
  if (response.status === 202 && location) {
    const pending = (await response.json()) as Summary;
    say(`  202 ${pending.id} pending; Location ${location}, Retry-After ${response.headers.get("retry-after")}`);
    resource = await gw.waitFor(location);
  } else {
    resource = (await response.json()) as Summary; // already final: the same request was summarised before
    say(`  ${response.status} from the store (${response.headers.get("cache-status")})`);
  }
  const markdown = resource.content?.markdown ?? "";
  say(`  ${resource.status}:\n` + markdown.split("\n").map((line) => "    " + line).join("\n"));
  emit("summary", { id: resource.id, status: resource.status, summary: resource });
  return resource.status === "completed";
}

async function stepProblems(gw: Gateway): Promise<boolean> {
  say("2. problem+json errors");
  const bad: [string, unknown][] = [
    ["an unknown provider", { provider: "no-such-provider", conversation: { text: CONVERSATION } }],
    ["a body without conversation", { provider: "commbox-demo" }],
  ];
  let ok = true;
  for (const [what, body] of bad) {
    try {
      await gw.createSummary(body);
      say(`  ${what} was accepted?`);
      ok = false;
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      switch (err.code) {
        case "unknown_provider":
          say(`  ${what}: ${err.status} ${err.code} — ask GET /v1/providers for the names`);
          break;
        case "invalid_request":
          say(`  ${what}: ${err.status} ${err.code} — fix the request: ${err.detail}`);
          break;
        default:
          say(`  ${what}: ${err.message}`);
      }
      emit("problem", { status: err.status, code: err.code, request_id: err.requestId });
    }
  }
  return ok;
}

async function stepWebhook(gw: Gateway, secret: string): Promise<boolean> {
  say("3. a webhook, its signature verified");
  const receiver = await Receiver.start(secret);
  try {
    // A conversation of its own, so the summary is pending when we ask (a final one
    // comes in the answer itself, and no webhook follows).
    const text = `${CONVERSATION} Client: Thank you. (ticket ${randomUUID()})`;
    let response: Response;
    try {
      response = await gw.createSummary(commboxRequest(text, receiver.url));
    } catch (err) {
      if (err instanceof Problem && err.code === "invalid_callback_url") {
        say(
          `  ${err.message}\n  (start the demo with SUMMARY_GATEWAY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true to allow ${receiver.url})`,
        );
      }
      throw err;
    }
    const created = (await response.json()) as Summary;
    if (response.status !== 202) {
      say(`  ${response.status}: the summary was already final, no webhook will come`);
      return false;
    }
    say(`  202 ${created.id}; waiting for the delivery at ${receiver.url}`);
    const delivery = await receiver.next(60_000);
    if (!delivery) {
      say("  no delivery within 60 s");
      emit("webhook", { verified: false, error: "no delivery" });
      return false;
    }
    if (!delivery.verified) {
      say(`  a delivery did not verify: ${delivery.error}`);
      emit("webhook", { verified: false, error: delivery.error });
      return false;
    }
    const resource = delivery.payload as Summary;
    say(`  webhook ${delivery.webhookId} verified: ${resource.id} ${resource.status}`);
    // The same delivery with its body changed must not verify.
    const original = delivery.body.toString("utf8");
    let tampered = original.replace('"status":"completed"', '"status":"failed"');
    if (tampered === original) tampered = original + " ";
    let tamperedRejected = false;
    try {
      verifyWebhook(secret, delivery.headers, Buffer.from(tampered, "utf8"));
      say("  the tampered body verified too!");
    } catch (err) {
      if (!(err instanceof WebhookVerificationError)) throw err;
      tamperedRejected = true;
      say(`  the tampered body was rejected: ${err.message}`);
    }
    emit("webhook", {
      verified: true,
      tampered_rejected: tamperedRejected,
      webhook_id: delivery.webhookId,
      id: resource.id,
      status: resource.status,
    });
    return tamperedRejected && resource.id === created.id && resource.status === "completed";
  } finally {
    await receiver.stop();
  }
}

async function stepRateLimit(gw: Gateway): Promise<boolean> {
  say("4. the rate limit: requests in a row until a 429, which is waited out");
  const retries: Record<string, unknown>[] = [];
  const onRetry: OnRetry = async (response, attempt, delay) => {
    logRetry(response, attempt, delay);
    const h = response.headers;
    retries.push({
      status: response.status,
      code: (await Problem.from(response)).code,
      retry_after: h.get("retry-after"),
      ratelimit_limit: h.get("ratelimit-limit"),
      ratelimit_remaining: h.get("ratelimit-remaining"),
      ratelimit_reset: h.get("ratelimit-reset"),
      delay,
    });
  };
  const limit = 1000; // bounded: a key this many requests do not exhaust is not limited enough to show
  for (let n = 1; n <= limit; n++) {
    const started = performance.now();
    const response = await gw.request("GET", "/v1/providers", { onRetry });
    await response.arrayBuffer();
    if (retries.length > 0) {
      const waited = (performance.now() - started) / 1000;
      say(`  request ${n} was limited; after ${waited.toFixed(1)} s it got ${response.status}`);
      emit("rate_limit", {
        limited: true,
        requests: n,
        first: retries[0],
        retries: retries.length,
        waited: Math.round(waited * 1000) / 1000,
        final_status: response.status,
      });
      return response.status === 200;
    }
  }
  say(`  ${limit} requests and no 429: this key's limit is too high to show`);
  emit("rate_limit", { limited: false, requests: limit });
  return false;
}

async function main(): Promise<number> {
  const baseUrl = process.argv[2] ?? process.env["SG_URL"] ?? DEFAULT_URL;
  const key = process.env["SG_API_KEY"] ?? DEMO_KEY;
  const secret = process.env["SG_WEBHOOK_SECRET"] ?? DEMO_WEBHOOK_SECRET;
  const gw = new Gateway(baseUrl, key);
  say(`summary-gateway at ${baseUrl}`);
  const results: Record<string, boolean> = {};
  try {
    results["summary"] = await stepSummary(gw);
    results["problem"] = await stepProblems(gw);
    results["webhook"] = await stepWebhook(gw, secret);
    results["rate_limit"] = await stepRateLimit(gw);
  } catch (err) {
    if (err instanceof Problem) {
      say(`unexpected error: ${err.message}`);
      emit("error", { status: err.status, code: err.code, detail: err.detail });
    } else {
      // fetch rejects with a TypeError (cause: the socket error) when the gateway cannot be reached.
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
      say(`failed talking to ${baseUrl}: ${String(err)}${cause}`);
      emit("error", { detail: String(err) + cause });
    }
    return 1;
  }
  const ok = Object.values(results).every(Boolean);
  emit("done", { ok, results });
  return ok ? 0 : 1;
}

process.exitCode = await main();
