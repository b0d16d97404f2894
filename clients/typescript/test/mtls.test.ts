// QarrClient with mutual TLS: a client certificate (privateKey + certificateChain) for a router that
// requires one (its tls.client_ca), against a real router over a fake tier with a throwaway PKI.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type ClientOptions, QarrClient, Unavailable } from "../src";
import { type Mesh, startMesh } from "./helpers";

describe("QarrClient against a router that requires client certificates", () => {
  let mesh: Mesh;
  const pem = (name: string): Buffer => readFileSync(join(mesh.pki as string, name));

  before(async () => {
    mesh = await startMesh({ fast: 0 }, [], { mtls: true });
  });

  after(async () => {
    await mesh?.stop();
  });

  /** A client that trusts the PKI's server CA, with `options` on top. */
  function client(options: ClientOptions = {}): QarrClient {
    return new QarrClient({ target: mesh.router, timeoutMs: 30_000, rootCertificates: pem("ca.pem"), ...options });
  }

  /** The call is refused before any answer: the router's handshake wants a certificate client-ca signed. */
  async function assertRefused(c: QarrClient): Promise<void> {
    try {
      await assert.rejects(c.complete({ prompt: "one two", maxTokens: 2, tier: "fast" }), (e: unknown) => {
        assert.ok(e instanceof Unavailable, String(e));
        return true;
      });
    } finally {
      c.close();
    }
  }

  test("with its client certificate the client streams, lists tiers and checks health over TLS", async () => {
    const c = client({ privateKey: pem("client.key"), certificateChain: pem("client.pem") });
    try {
      const answer = await c.complete({ prompt: "one two", maxTokens: 2, tier: "fast" });
      assert.equal(answer.text, "alpha bravo ");
      assert.equal(answer.tier, "fast");
      assert.deepEqual(
        (await c.listTiers()).map((t) => [t.name, t.health]),
        [["fast", "SERVING"]],
      );
      assert.equal(await c.health(), "SERVING");
    } finally {
      c.close();
    }
  });

  test("without a client certificate the router refuses the connection", async () => {
    await assertRefused(client({ maxRetries: 0 }));
  });

  test("a certificate that another CA signed is refused too", async () => {
    // router-client.pem is signed by router-ca.pem (what the tiers trust), not by the router's client CA.
    await assertRefused(
      client({ privateKey: pem("router-client.key"), certificateChain: pem("router-client.pem"), maxRetries: 0 }),
    );
  });

  test("privateKey and certificateChain go together: one alone is a TypeError at once", () => {
    assert.throws(() => client({ privateKey: pem("client.key") }), TypeError);
    assert.throws(() => client({ certificateChain: pem("client.pem") }), TypeError);
  });
});
