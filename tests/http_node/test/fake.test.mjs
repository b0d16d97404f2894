// The official openai npm package against the router's HTTP door over fake tiers (fake_mesh.py).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { rawStream, startMesh, waitFor } from "./helpers.mjs";

const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
const fakeText = (n) => Array.from({ length: n }, (_, i) => `${WORDS[i % WORDS.length]} `).join("");
const ask = (extra = {}) => ({ model: "auto", messages: [{ role: "user", content: "hello there" }], ...extra });

describe("openai npm package -> QARR HTTP door -> fake tiers", () => {
  let mesh;
  let client;

  before(async () => {
    // fast: instant tokens; slow: 20 ms a token. The router takes 2 streams at most (for the 429 test).
    mesh = await startMesh({ fast: 0, slow: 20 }, ["--max-in-flight", "2"]);
    client = new OpenAI({ baseURL: mesh.baseURL, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => mesh?.stop());

  const inFlight = async (tier) => {
    const models = await client.models.list();
    return models.data.find((m) => m.id === tier).qarr.in_flight;
  };

  test("streams a chat answer chunk by chunk, then the finish chunk with qarr and the usage chunk", async () => {
    const stream = await client.chat.completions.create({
      ...ask({ model: "fast", max_tokens: 5 }),
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.equal(text, fakeText(5));
    assert.equal(chunks[0].choices[0].delta.role, "assistant");
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finish.length, 1);
    assert.equal(finish[0].choices[0].finish_reason, "length");
    assert.deepEqual(finish[0].qarr, { tier: "fast", model: "fake-fast", quantization: "q-fast", routing_reason: "pinned", attempts: 1 });
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 5);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + 5);
  });

  test("answers chat and completions without streaming; headers name the tier and the reason", async () => {
    const { data, response } = await client.chat.completions.create(ask({ model: "slow", max_tokens: 3 })).withResponse();
    assert.equal(data.choices[0].message.content, fakeText(3));
    assert.equal(data.object, "chat.completion");
    assert.equal(data.model, "slow");
    assert.equal(data.usage.completion_tokens, 3);
    assert.equal(response.headers.get("x-qarr-tier"), "slow");
    assert.equal(response.headers.get("x-qarr-quantization"), "q-slow");
    assert.equal(response.headers.get("x-qarr-routing-reason"), "pinned");
    const completion = await client.completions.create({ model: "auto", prompt: "Once upon a time", max_tokens: 2 });
    assert.equal(completion.choices[0].text, fakeText(2));
    assert.ok(["fast", "slow"].includes(completion.qarr.tier));
  });

  test("the raw stream is text/event-stream and ends with data: [DONE]", async () => {
    const { response, text } = await rawStream(`${mesh.baseURL}/chat/completions`, ask({ max_tokens: 2, stream: true }));
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    assert.ok(text.endsWith("data: [DONE]\n\n"), text.slice(-200));
    const events = text.split("\n\n").filter(Boolean);
    assert.ok(events.slice(0, -1).every((e) => e.startsWith("data: {")));
  });

  test("models.list() lists auto and every tier", async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, ["auto", "fast", "slow"]);
  });

  test("a pinned unknown model is 404 model_not_found; an unknown field is 400 naming it", async () => {
    await assert.rejects(client.chat.completions.create(ask({ model: "gpt-4o" })), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, String(e));
      assert.equal(e.status, 404);
      assert.equal(e.code, "model_not_found");
      return true;
    });
    await assert.rejects(client.chat.completions.create(ask({ frobnicate: 1 })), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.param, "frobnicate");
      return true;
    });
  });

  test("aborting mid-stream frees the router's stream to the tier within 1 s", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { ...ask({ model: "slow", max_tokens: 2000 }), stream: true },
      { signal: controller.signal },
    );
    let got = 0;
    // The SDK ends the iteration quietly when its request is aborted.
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content && ++got === 2) controller.abort();
    }
    const aborted = Date.now();
    assert.ok(got >= 2 && got < 2000, `${got} chunks`); // chunks already in flight may still arrive
    const freed = await waitFor("the slow tier's stream closed", async () => (await inFlight("slow")) === 0, 1_000);
    console.log(`abort -> router stream closed: ${freed - aborted} ms`);
  });

  test("a full router answers 429 RateLimitError with retry-after", async () => {
    const holders = [new AbortController(), new AbortController()];
    const held = holders.map((c) =>
      client.chat.completions
        .create({ ...ask({ model: "slow", max_tokens: 2000 }), stream: true }, { signal: c.signal })
        .then(async (s) => {
          for await (const _ of s);
        })
        .catch(() => {}),
    );
    await waitFor("two streams held", async () => (await inFlight("slow")) === 2);
    await assert.rejects(client.chat.completions.create(ask({ max_tokens: 1 })), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, String(e));
      assert.equal(e.code, "router_full");
      assert.ok(Number(e.headers.get("retry-after")) >= 1);
      return true;
    });
    for (const c of holders) c.abort();
    await Promise.all(held);
    await waitFor("streams released", async () => (await inFlight("slow")) === 0);
  });
});
