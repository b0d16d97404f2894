// The generated TypeScript is current, and the check notices a .proto edited without regenerating.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { appendFileSync, cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { PACKAGE_DIR } from "./helpers";

function check(protos: string) {
  return spawnSync(process.execPath, ["scripts/gen.mjs", "--check", "--protos", protos], {
    cwd: PACKAGE_DIR,
    encoding: "utf8",
  });
}

test("gen:check passes on protos/ as committed and fails naming the file after a .proto changes", () => {
  const tmp = mkdtempSync(join(tmpdir(), "qarr-protos-"));
  try {
    cpSync(join(PACKAGE_DIR, "..", "..", "protos", "qarr"), join(tmp, "qarr"), {
      recursive: true,
      filter: (p) => !p.endsWith(".py") && !p.endsWith(".pyi"),
    });
    const fresh = check(tmp);
    assert.equal(fresh.status, 0, fresh.stdout + fresh.stderr);
    appendFileSync(join(tmp, "qarr", "v1", "router_service.proto"), "\nmessage Added { string field = 1; }\n");
    const stale = check(tmp);
    assert.equal(stale.status, 1, stale.stdout + stale.stderr);
    assert.match(stale.stderr, /stale generated TypeScript[\s\S]*qarr\/v1\/router_service\.ts/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
