// Retry, error mapping and metadata against a scripted RouterService in this process (grpc-js server).
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  Metadata,
  type sendUnaryData,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  status as Status,
} from "@grpc/grpc-js";
import {
  BACKOFF,
  Cancelled,
  DeadlineExceeded,
  InvalidRequest,
  QarrClient,
  QarrError,
  ResourceExhausted,
  ServerError,
  Unauthenticated,
  Unavailable,
  retryDelayMs,
} from "../src";
import { FinishReason } from "../src/gen/qarr/v1/common";
import { waitFor } from "./helpers";
import {
  BreakerState,
  type GenerateRequest,
  GenerateResponse,
  HealthState,
  type ListTiersRequest,
  ListTiersResponse,
  RouterServiceService,
  TierInfo,
} from "../src/gen/qarr/v1/router_service";

/** What the scripted router does with one call: stream `chunks` text chunks, then fail with `fail` or finish. */
interface Step {
  chunks?: number;
  fail?: Status;
  reason?: string;
  /** grpc-retry-pushback-ms sent with the failure. */
  pushback?: string;
}

/** google.rpc.Status{code, message, details: [Any(ErrorInfo{reason, domain})]}, as mesh/status.py sends it. */
function statusDetails(code: Status, message: string, reason: string): Buffer {
  const info = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .string(reason)
    .tag(2, WireType.LengthDelimited)
    .string("qarr.dev")
    .finish();
  const any = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .string("type.googleapis.com/google.rpc.ErrorInfo")
    .tag(2, WireType.LengthDelimited)
    .bytes(info)
    .finish();
  const status = new BinaryWriter()
    .tag(1, WireType.Varint)
    .int32(code)
    .tag(2, WireType.LengthDelimited)
    .string(message)
    .tag(3, WireType.LengthDelimited)
    .bytes(any)
    .finish();
  return Buffer.from(status);
}

describe("retries and errors against a scripted router", () => {
  let server: Server;
  let target: string;
  let script: Step[] = [];
  let calls: Metadata[] = [];
  let times: number[] = [];

  before(async () => {
    server = new Server();
    server.addService(RouterServiceService, {
      generate(call: ServerWritableStream<GenerateRequest, GenerateResponse>) {
        calls.push(call.metadata);
        times.push(Date.now());
        const step = script.shift() ?? {};
        const chunks = step.chunks ?? (step.fail === undefined ? 2 : 0);
        for (let i = 1; i <= chunks; i++) {
          call.write(GenerateResponse.fromPartial({ text: `t${i} `, generatedTokens: i }));
        }
        if (step.fail !== undefined) {
          const metadata = new Metadata();
          if (step.reason) metadata.set("grpc-status-details-bin", statusDetails(step.fail, "scripted", step.reason));
          if (step.pushback !== undefined) metadata.set("grpc-retry-pushback-ms", step.pushback);
          call.emit("error", { code: step.fail, details: `scripted ${Status[step.fail]}`, metadata });
          return;
        }
        call.write(
          GenerateResponse.fromPartial({
            finishReason: FinishReason.FINISH_REASON_STOP,
            usage: { promptTokens: 1, completionTokens: chunks },
            tier: "scripted",
            model: "m",
            quantization: "q",
            generatedTokens: chunks,
            routingReason: "pinned",
            attempts: 1,
          }),
        );
        call.end();
      },
      listTiers(
        _call: ServerUnaryCall<ListTiersRequest, ListTiersResponse>,
        callback: sendUnaryData<ListTiersResponse>,
      ) {
        calls.push(new Metadata());
        const step = script.shift() ?? {};
        if (step.fail !== undefined) callback({ code: step.fail, details: "scripted" });
        else {
          const tier = TierInfo.fromPartial({
            name: "scripted",
            health: HealthState.HEALTH_STATE_SERVING,
            breaker: BreakerState.BREAKER_STATE_CLOSED,
          });
          callback(null, ListTiersResponse.fromPartial({ tiers: [tier] }));
        }
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    target = `127.0.0.1:${port}`;
  });

  after(() => server.forceShutdown());

  beforeEach(() => {
    script = [];
    calls = [];
    times = [];
  });

  test("Unavailable before the first chunk is retried, then the stream is delivered", async () => {
    script = [{ fail: Status.UNAVAILABLE, reason: "TIER_UNAVAILABLE" }, {}];
    const client = new QarrClient({ target });
    try {
      const answer = await client.complete("x");
      assert.equal(answer.text, "t1 t2 ");
      assert.equal(answer.tier, "scripted");
      assert.equal(calls.length, 2);
    } finally {
      client.close();
    }
  });

  test("ResourceExhausted before the first chunk is retried", async () => {
    script = [{ fail: Status.RESOURCE_EXHAUSTED, reason: "ROUTER_FULL" }, {}];
    const client = new QarrClient({ target });
    try {
      assert.equal((await client.complete("x")).text, "t1 t2 ");
      assert.equal(calls.length, 2);
    } finally {
      client.close();
    }
  });

  test("maxRetries bounds the attempts; the last error is thrown with its reason", async () => {
    script = [1, 2, 3, 4].map(() => ({ fail: Status.UNAVAILABLE, reason: "TIER_UNAVAILABLE" }));
    const client = new QarrClient({ target, maxRetries: 2 });
    try {
      await assert.rejects(
        client.complete("x"),
        (e: unknown) => e instanceof Unavailable && e.reason === "TIER_UNAVAILABLE",
      );
      assert.equal(calls.length, 3);
    } finally {
      client.close();
    }
  });

  test("what the router already retried (negative retry pushback) is thrown at once, marked not retryable", async () => {
    const client = new QarrClient({ target });
    try {
      for (const [code, reason] of [
        [Status.UNAVAILABLE, "NO_HEALTHY_TIER"],
        [Status.RESOURCE_EXHAUSTED, "TIERS_FULL"],
        [Status.UNAVAILABLE, "UPSTREAM_ERROR"],
      ] as const) {
        script = [{ fail: code, reason, pushback: "-1" }, {}];
        calls = [];
        await assert.rejects(client.complete("x"), (e: unknown) => {
          assert.ok(e instanceof QarrError && e.reason === reason, String(e));
          assert.equal(e.retryable, false);
          return true;
        });
        assert.equal(calls.length, 1, reason);
      }
    } finally {
      client.close();
    }
  });

  test("a retry pushback is the least wait before the retry", async () => {
    script = [{ fail: Status.RESOURCE_EXHAUSTED, reason: "ROUTER_FULL", pushback: "400" }, {}];
    const client = new QarrClient({ target });
    try {
      assert.equal((await client.complete("x")).text, "t1 t2 ");
      assert.equal(calls.length, 2);
      assert.ok(times[1] - times[0] >= 400, `${times[1] - times[0]} ms between attempts`);
    } finally {
      client.close();
    }
  });

  test("a pushback that cannot be read counts as do-not-retry", async () => {
    script = [{ fail: Status.UNAVAILABLE, pushback: "soon" }, {}];
    const client = new QarrClient({ target });
    try {
      await assert.rejects(client.complete("x"), (e: unknown) => e instanceof Unavailable && !e.retryable);
      assert.equal(calls.length, 1);
    } finally {
      client.close();
    }
  });

  test("errors that retrying cannot fix are thrown at once", async () => {
    const client = new QarrClient({ target });
    try {
      for (const code of [Status.INVALID_ARGUMENT, Status.DEADLINE_EXCEEDED, Status.INTERNAL, Status.UNAUTHENTICATED]) {
        script = [{ fail: code }, {}];
        calls = [];
        await assert.rejects(client.complete("x"), QarrError);
        assert.equal(calls.length, 1, Status[code]);
      }
    } finally {
      client.close();
    }
  });

  test("a stream that delivered a chunk is never retried: the chunk, then the error", async () => {
    script = [{ chunks: 1, fail: Status.UNAVAILABLE, reason: "UPSTREAM_ERROR" }, {}];
    const client = new QarrClient({ target });
    const seen: string[] = [];
    try {
      await assert.rejects(
        (async () => {
          for await (const chunk of client.generate("x")) seen.push(chunk.text);
        })(),
        (e: unknown) => e instanceof Unavailable && e.reason === "UPSTREAM_ERROR",
      );
      assert.deepEqual(seen, ["t1 "]);
      assert.equal(calls.length, 1);
    } finally {
      client.close();
    }
  });

  test("retries stop at the call's deadline", async () => {
    script = Array.from({ length: 50 }, () => ({ fail: Status.UNAVAILABLE }));
    const client = new QarrClient({ target, maxRetries: 50, timeoutMs: 250 });
    const started = Date.now();
    try {
      await assert.rejects(
        client.complete("x"),
        (e: unknown) => e instanceof Unavailable || e instanceof DeadlineExceeded,
      );
      assert.ok(Date.now() - started < 1_000, `${Date.now() - started} ms`);
      assert.ok(calls.length <= 3, `${calls.length} calls`); // 100-200 ms, then 200-300 ms: the second wait passes 250 ms
    } finally {
      client.close();
    }
  });

  test("aborting during a retry wait throws Cancelled at once", async () => {
    script = [{ fail: Status.UNAVAILABLE, pushback: "5000" }, {}]; // a 5 s wait before the retry
    const client = new QarrClient({ target });
    const controller = new AbortController();
    try {
      const call = client.complete("x", { signal: controller.signal });
      await waitFor("the first attempt", async () => calls.length === 1);
      await new Promise((resolve) => setTimeout(resolve, 50)); // its error reaches the client: the wait starts
      const aborted = Date.now();
      controller.abort();
      await assert.rejects(call, Cancelled);
      assert.ok(Date.now() - aborted < 1_000, `${Date.now() - aborted} ms after the abort`);
      assert.equal(calls.length, 1);
    } finally {
      client.close();
    }
  });

  test("listTiers is retried like Generate", async () => {
    script = [{ fail: Status.UNAVAILABLE }, {}];
    const client = new QarrClient({ target });
    try {
      const tiers = await client.listTiers();
      assert.deepEqual(
        tiers.map((t) => [t.name, t.health, t.breaker]),
        [["scripted", "SERVING", "CLOSED"]],
      );
      assert.equal(calls.length, 2);
    } finally {
      client.close();
    }
  });

  test("the token goes out as authorization: Bearer on every call", async () => {
    const client = new QarrClient({ target, token: "s3cret" });
    try {
      await client.complete("x");
      assert.deepEqual(calls[0].get("authorization"), ["Bearer s3cret"]);
    } finally {
      client.close();
    }
  });

  test("each status maps to one error class, with the ErrorInfo reason decoded", async () => {
    const table: [Status, typeof QarrError][] = [
      [Status.INVALID_ARGUMENT, InvalidRequest],
      [Status.NOT_FOUND, InvalidRequest],
      [Status.OUT_OF_RANGE, InvalidRequest],
      [Status.FAILED_PRECONDITION, InvalidRequest],
      [Status.ALREADY_EXISTS, InvalidRequest],
      [Status.DEADLINE_EXCEEDED, DeadlineExceeded],
      [Status.CANCELLED, Cancelled],
      [Status.UNAUTHENTICATED, Unauthenticated],
      [Status.PERMISSION_DENIED, Unauthenticated],
      [Status.INTERNAL, ServerError],
      [Status.UNKNOWN, ServerError],
      [Status.UNIMPLEMENTED, ServerError],
      [Status.DATA_LOSS, ServerError],
    ];
    const client = new QarrClient({ target, maxRetries: 0 });
    try {
      for (const [code, cls] of table) {
        script = [{ fail: code, reason: `R_${Status[code]}` }];
        await assert.rejects(client.complete("x"), (e: unknown) => {
          assert.ok(e instanceof cls, `${Status[code]}: ${String(e)}`);
          assert.equal(e.name, cls.name);
          assert.equal(e.code, code);
          assert.equal(e.reason, `R_${Status[code]}`);
          assert.equal(e.message, `scripted ${Status[code]}`);
          return true;
        });
      }
    } finally {
      client.close();
    }
  });
});

describe("retryDelayMs (the retry rule as a pure function)", () => {
  const unavailable = new Unavailable("x");
  const half = () => 0.5;

  test("waits 100 ms doubling per failed attempt, plus jitter, capped at 2 s", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => retryDelayMs(unavailable, n, 10, null, half)),
      [150, 250, 450, 850, 1650, BACKOFF.maxMs],
    );
  });

  test("gives up after maxRetries retries", () => {
    assert.notEqual(retryDelayMs(unavailable, 2, 2, null), null);
    assert.equal(retryDelayMs(unavailable, 3, 2, null), null);
    assert.equal(retryDelayMs(unavailable, 1, 0, null), null);
  });

  test("gives up when the wait would pass the deadline", () => {
    assert.equal(retryDelayMs(unavailable, 1, 2, 150, half), null);
    assert.equal(retryDelayMs(unavailable, 1, 2, 151, half), 150);
  });

  test("waits at least the server's pushback, within the deadline", () => {
    const pushedBack = new Unavailable("x", { retryAfterMs: 500 });
    assert.equal(retryDelayMs(pushedBack, 1, 2, null, half), 500);
    assert.equal(retryDelayMs(pushedBack, 1, 2, 500, half), null);
    assert.equal(retryDelayMs(new Unavailable("x", { retryAfterMs: 10 }), 1, 2, null, half), 150);
  });

  test("an error the server marked not retryable is not retried", () => {
    assert.equal(retryDelayMs(new Unavailable("x", { retryable: false }), 1, 2, null), null);
    assert.equal(retryDelayMs(new ResourceExhausted("x", { retryable: false }), 1, 2, null), null);
  });

  test("retries only Unavailable and ResourceExhausted", () => {
    assert.notEqual(retryDelayMs(new ResourceExhausted("x"), 1, 2, null), null);
    for (const e of [
      new InvalidRequest("x"),
      new DeadlineExceeded("x"),
      new ServerError("x"),
      new Cancelled("x"),
      new Error("x"),
    ]) {
      assert.equal(retryDelayMs(e, 1, 2, null), null, e.constructor.name);
    }
  });
});
