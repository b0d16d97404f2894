// Test helpers: a real router with its HTTP door over fake tiers (fake_mesh.py), polling.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, "..", "..", "..");

/** The Python that runs the mesh: $QARR_PYTHON, else the checkout's .venv, else python3. */
export function python() {
  const venv = join(REPO, ".venv", "bin", "python");
  return process.env.QARR_PYTHON || (existsSync(venv) ? venv : "python3");
}

/**
 * Start `python fake_mesh.py` with one fake tier per entry (name -> ms per token) under a real router with its
 * HTTP door; resolves once every tier is serving there. `stop()` closes the helper's stdin, which stops
 * every process it started.
 */
export async function startMesh(tiers, extraArgs = []) {
  const args = [join(HERE, "..", "fake_mesh.py"), ...Object.entries(tiers).flatMap(([n, ms]) => ["--tier", `${n}:${ms}`]), ...extraArgs];
  const proc = spawn(python(), args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (b) => (stderr += b.toString()));
  const exited = new Promise((resolve) => proc.on("exit", (code) => resolve(code)));
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).once("line", resolve);
    proc.once("exit", (code) => reject(new Error(`fake_mesh.py exited with ${code} before the mesh was up:\n${stderr}`)));
    proc.once("error", reject);
  });
  const mesh = JSON.parse(line);
  return {
    ...mesh,
    baseURL: `${mesh.http}/v1`,
    async stop() {
      proc.stdin.end();
      const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      const code = await exited;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`fake_mesh.py exited with ${code}:\n${stderr}`);
    },
  };
}

/** Poll `probe` until it returns true; throws after `timeoutMs` naming `what`. */
export async function waitFor(what, probe, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return Date.now();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** The raw SSE body of one streaming request, read to the end with fetch. */
export async function rawStream(url, body) {
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { response, text: await response.text() };
}
