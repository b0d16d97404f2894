// QarrClient against a real router (python -m router) over fake-engine tiers (python -m tier_server --engine fake).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { status as Status } from "@grpc/grpc-js";
import { Cancelled, DeadlineExceeded, InvalidRequest, QarrClient, type Chunk, Unavailable } from "../src";
import { type Mesh, PACKAGE_DIR, startMesh, tierRunning, waitFor } from "./helpers";

// 20 ms a token: 1000 tokens take 20 s, so a call to "slow" is still streaming when the test acts on it.
const SLOW_TOKENS = 1000;

describe("QarrClient against a real router over fake tiers", () => {
  let mesh: Mesh;
  let client: QarrClient;

  before(async () => {
    mesh = await startMesh({ fast: 0, slow: 20 }, ["gone"]);
    client = new QarrClient({ target: mesh.router, timeoutMs: 30_000 });
  });

  after(async () => {
    client?.close();
    await mesh?.stop();
  });

  /** The tier's engine and the router's in-flight count both back to 0. */
  async function assertFreed(tier: string): Promise<void> {
    await waitFor(`tier ${tier} running 0`, async () => (await tierRunning(mesh.tiers[tier])) === 0);
    await waitFor(
      `router in-flight 0 for ${tier}`,
      async () => (await client.listTiers()).find((t) => t.name === tier)?.inFlight === 0,
    );
  }

  test("streams text chunks, then one last chunk with finish reason, usage and the serving tier", async () => {
    const chunks: Chunk[] = [];
    for await (const chunk of client.generate({ prompt: "one two three", maxTokens: 5, tier: "fast" }))
      chunks.push(chunk);
    assert.equal(chunks.length, 6);
    assert.deepEqual(
      chunks.slice(0, 5).map((c) => [c.text, c.generatedTokens, c.finishReason]),
      [
        ["alpha ", 1, null],
        ["bravo ", 2, null],
        ["charlie ", 3, null],
        ["delta ", 4, null],
        ["echo ", 5, null],
      ],
    );
    const last = chunks[5];
    assert.equal(last.text, "");
    assert.equal(last.finishReason, "length");
    assert.deepEqual(last.usage, { promptTokens: 3, completionTokens: 5 });
    assert.equal(last.tier, "fast");
    assert.equal(last.model, "fake-fast");
    assert.equal(last.quantization, "q-fast");
    assert.equal(last.routingReason, "pinned");
    assert.equal(last.attempts, 1);
  });

  test("complete() joins the text of a chat request", async () => {
    const answer = await client.complete({ messages: [{ role: "user", content: "Hi" }], maxTokens: 3, tier: "fast" });
    assert.equal(answer.text, "alpha bravo charlie ");
    assert.equal(answer.finishReason, "length");
    assert.equal(answer.usage.completionTokens, 3);
    assert.equal(answer.tier, "fast");
  });

  test("an unpinned request is routed to some tier and says why", async () => {
    const answer = await client.complete("Name a colour.", { timeoutMs: 60_000 });
    assert.ok(["fast", "slow"].includes(answer.tier), answer.tier);
    assert.notEqual(answer.routingReason, "");
  });

  test("aborting mid-stream throws Cancelled and the tier stops generating", async () => {
    const controller = new AbortController();
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of client.generate(
          { prompt: "x", maxTokens: SLOW_TOKENS, tier: "slow" },
          { signal: controller.signal },
        )) {
          seen.push(chunk.text);
          if (seen.length === 2) {
            assert.equal(await tierRunning(mesh.tiers.slow), 1); // the request is live on the tier
            controller.abort();
          }
        }
      })(),
      (e: unknown) => {
        assert.ok(e instanceof Cancelled, String(e));
        assert.equal(e.code, Status.CANCELLED);
        assert.equal((e.cause as Error).name, "AbortError");
        return true;
      },
    );
    assert.ok(seen.length >= 2 && seen.length < SLOW_TOKENS);
    await assertFreed("slow");
  });

  test("breaking out of the loop cancels the call", async () => {
    let n = 0;
    for await (const _ of client.generate({ prompt: "x", maxTokens: SLOW_TOKENS, tier: "slow" })) {
      if (++n === 2) break;
    }
    await assertFreed("slow");
  });

  test("an already aborted signal throws Cancelled without calling", async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(client.complete({ prompt: "x", tier: "fast" }, { signal: controller.signal }), Cancelled);
  });

  test("a deadline that passes mid-stream throws DeadlineExceeded and frees the tier", async () => {
    const started = Date.now();
    await assert.rejects(
      client.complete({ prompt: "x", maxTokens: SLOW_TOKENS, tier: "slow" }, { timeoutMs: 300 }),
      (e: unknown) => {
        assert.ok(e instanceof DeadlineExceeded, String(e));
        assert.equal(e.code, Status.DEADLINE_EXCEEDED);
        return true;
      },
    );
    assert.ok(Date.now() - started < 5_000);
    await assertFreed("slow");
  });

  test("a bad sampling value is InvalidRequest with the server's reason and message", async () => {
    await assert.rejects(client.complete({ prompt: "x", temperature: 5, tier: "fast" }), (e: unknown) => {
      assert.ok(e instanceof InvalidRequest, String(e));
      assert.equal(e.codeName, "INVALID_ARGUMENT");
      assert.equal(e.reason, "INVALID_REQUEST");
      assert.match(e.message, /temperature/);
      return true;
    });
  });

  test("an unknown pinned tier is InvalidRequest UNKNOWN_TIER", async () => {
    await assert.rejects(client.complete({ prompt: "x", tier: "nope" }), (e: unknown) => {
      assert.ok(e instanceof InvalidRequest, String(e));
      assert.equal(e.reason, "UNKNOWN_TIER");
      assert.match(e.message, /nope/);
      return true;
    });
  });

  test("prompt and messages together, or neither, are a TypeError at once", () => {
    assert.throws(() => client.generate({ prompt: "x", messages: [{ role: "user", content: "y" }] }), TypeError);
    assert.throws(() => client.generate({}), TypeError);
  });

  test("listTiers lists every tier with health, breaker, address and model", async () => {
    const tiers = await client.listTiers();
    assert.deepEqual(tiers.map((t) => t.name).sort(), ["fast", "gone", "slow"]);
    for (const t of tiers) {
      assert.equal(t.health, t.name === "gone" ? "NOT_SERVING" : "SERVING", t.name);
      assert.equal(t.address, mesh.tiers[t.name]);
      assert.equal(t.model, `fake-${t.name}`);
      assert.equal(t.quantization, `q-${t.name}`);
      assert.equal(t.maxModelLen, 2048);
    }
    assert.deepEqual(
      tiers.filter((t) => t.name !== "gone").map((t) => t.breaker),
      ["CLOSED", "CLOSED"],
    );
  });

  test("a pinned tier that is down is Unavailable and not retryable: the router already retried", async () => {
    await assert.rejects(client.complete({ prompt: "x", tier: "gone" }), (e: unknown) => {
      assert.ok(e instanceof Unavailable, String(e));
      assert.equal(e.reason, "TIER_UNAVAILABLE");
      assert.equal(e.retryable, false); // the router's negative grpc-retry-pushback-ms, read from the trailers
      assert.equal(e.retryAfterMs, null);
      return true;
    });
  });

  test("health says SERVING", async () => {
    assert.equal(await client.health(), "SERVING");
  });

  test("a router that is not there is Unavailable once the retries are spent", async () => {
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const nobody = new QarrClient({ target: `127.0.0.1:${port}`, maxRetries: 1, timeoutMs: 10_000 });
    const started = Date.now();
    try {
      await assert.rejects(nobody.complete("x"), Unavailable);
      assert.ok(Date.now() - started >= 100, "one backoff (>= 100 ms) before the retry");
    } finally {
      nobody.close();
    }
  });

  test("the example in docs/typescript.md is examples/quickstart.ts, and it runs as shown", async () => {
    const docs = readFileSync(join(PACKAGE_DIR, "..", "..", "docs", "typescript.md"), "utf8");
    const block = /<!-- readme:typescript -->\n```ts\n([\s\S]*?)```/.exec(docs);
    assert.ok(block, "no readme:typescript block in docs/typescript.md");
    assert.equal(block[1], readFileSync(join(PACKAGE_DIR, "examples", "quickstart.ts"), "utf8"));

    const { stdout } = await promisify(execFile)(process.execPath, ["dist/examples/quickstart.js"], {
      cwd: PACKAGE_DIR,
      env: { ...process.env, QARR_TARGET: mesh.router },
    });
    assert.match(stdout, /\[tier=(fast|slow) finish=length tokens=\d+\+32\]/);
    assert.match(stdout, /^cancelled after 3 chunks$/m);
    assert.match(stdout, /^InvalidRequest INVALID_ARGUMENT UNKNOWN_TIER$/m);
    assert.match(stdout, /^fast SERVING CLOSED \d+$/m);
    assert.match(stdout, /^slow SERVING CLOSED \d+$/m);
  });
});
