// Test helpers: a real router over fake-engine tiers (test/fake_mesh.py), tier load, polling.
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { credentials } from "@grpc/grpc-js";
import { TierServiceClient } from "../src/gen/qarr/v1/tier_service";

/** clients/typescript, from dist/test. */
export const PACKAGE_DIR = join(__dirname, "..", "..");
const REPO = join(PACKAGE_DIR, "..", "..");

/** The Python that runs the mesh: $QARR_PYTHON, else the checkout's .venv, else python3. */
export function python(): string {
  const venv = join(REPO, ".venv", "bin", "python");
  return process.env.QARR_PYTHON || (existsSync(venv) ? venv : "python3");
}

export interface Mesh {
  router: string;
  tiers: Record<string, string>;
  /** With `mtls`: the folder of the throwaway PKI (scripts/dev_certs.py's files); else null. */
  pki: string | null;
  stop(): Promise<void>;
}

export interface MeshOptions {
  /** The router serves TLS and requires a client certificate that the PKI's client-ca.pem signed. */
  mtls?: boolean;
}

/**
 * Start `python test/fake_mesh.py` with one fake tier per entry (name -> ms per token), plus `deadTiers`
 * (nothing listening), and a real router over them (with `options.mtls`, one that requires a client
 * certificate); resolves once every live tier is SERVING at the router. `stop()` closes the helper's stdin,
 * which stops every process it started.
 */
export async function startMesh(
  tiers: Record<string, number>,
  deadTiers: string[] = [],
  options: MeshOptions = {},
): Promise<Mesh> {
  const args = [
    join(PACKAGE_DIR, "test", "fake_mesh.py"),
    ...Object.entries(tiers).flatMap(([n, ms]) => ["--tier", `${n}:${ms}`]),
    ...deadTiers.flatMap((n) => ["--dead-tier", n]),
    ...(options.mtls ? ["--mtls"] : []),
  ];
  const proc: ChildProcessWithoutNullStreams = spawn(python(), args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout });
    lines.once("line", resolve);
    proc.once("exit", (code) =>
      reject(new Error(`fake_mesh.py exited with ${code} before the mesh was up:\n${stderr}`)),
    );
    proc.once("error", reject);
  });
  const { router, tiers: addresses, pki } = JSON.parse(line) as {
    router: string;
    tiers: Record<string, string>;
    pki: string | null;
  };
  return {
    router,
    tiers: addresses,
    pki,
    async stop() {
      proc.stdin.end();
      const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      const code = await exited;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`fake_mesh.py exited with ${code}:\n${stderr}`);
    },
  };
}

/** Requests the tier's engine is running now (TierService/GetLoad, straight to the tier). */
export function tierRunning(address: string): Promise<number> {
  const client = new TierServiceClient(address, credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.getLoad({}, (error, response) => {
      client.close();
      if (error) reject(error);
      else resolve(response.load?.runningRequests ?? 0);
    }),
  );
}

/** Poll `probe` until it returns true; throws after `timeoutMs` with `what` in the message. */
export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
