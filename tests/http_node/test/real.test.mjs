// The openai npm package against a real mesh (one vLLM CPU tier): run by tests/http/test_http_real.py with
// QARR_HTTP_BASE_URL (the door's /v1 URL) and QARR_TIER (the tier's name).
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";

const baseURL = process.env.QARR_HTTP_BASE_URL;
const tier = process.env.QARR_TIER;
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });

test("streams an answer containing Paris from the real tier, with usage", { skip: !baseURL && "QARR_HTTP_BASE_URL unset" }, async () => {
  const stream = await client.chat.completions.create({
    model: "auto",
    messages: [{ role: "user", content: "What is the capital of France?" }],
    max_tokens: 24,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  let qarr = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
    if (chunk.qarr) qarr = chunk.qarr;
  }
  assert.match(text, /Paris/);
  assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens > 0, JSON.stringify(usage));
  assert.equal(qarr.tier, tier);
  console.log(`node stream: ${JSON.stringify(text)} usage ${JSON.stringify(usage)}`);
});

test("models.list() lists the tier; a pinned unknown model is 404", { skip: !baseURL && "QARR_HTTP_BASE_URL unset" }, async () => {
  const ids = (await client.models.list()).data.map((m) => m.id);
  assert.deepEqual(ids, ["auto", tier]);
  await assert.rejects(
    client.chat.completions.create({ model: "no-such-tier", messages: [{ role: "user", content: "hi" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
});
