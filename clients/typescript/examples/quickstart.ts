import { Cancelled, InvalidRequest, QarrClient } from "@qarr/client";

async function main(): Promise<void> {
  const client = new QarrClient({ timeoutMs: 60_000 }); // target: $QARR_TARGET, else 127.0.0.1:50051
  try {
    const question = { messages: [{ role: "user", content: "What is the capital of France?" }], maxTokens: 32 };
    for await (const chunk of client.generate(question)) {
      process.stdout.write(chunk.text);
      if (chunk.finishReason) {
        const { promptTokens, completionTokens } = chunk.usage!;
        console.log(`\n[tier=${chunk.tier} finish=${chunk.finishReason} tokens=${promptTokens}+${completionTokens}]`);
      }
    }

    const stop = new AbortController(); // aborting cancels the call at the router and the tier
    let chunks = 0;
    try {
      for await (const _ of client.generate("Count to one hundred:", { signal: stop.signal })) {
        if (++chunks === 3) stop.abort();
      }
    } catch (e) {
      if (!(e instanceof Cancelled)) throw e;
      console.log(`cancelled after ${chunks} chunks`);
    }

    try {
      await client.complete({ prompt: "Hi", tier: "no-such-tier" });
    } catch (e) {
      if (!(e instanceof InvalidRequest)) throw e;
      console.log(`${e.name} ${e.codeName} ${e.reason}`); // InvalidRequest INVALID_ARGUMENT UNKNOWN_TIER
    }

    for (const tier of await client.listTiers()) console.log(tier.name, tier.health, tier.breaker, tier.inFlight);
  } finally {
    client.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
