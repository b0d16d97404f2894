// Regenerate the TypeScript types and grpc-js stubs from protos/ (buf + ts-proto, both from npm).
//
//   npm run gen          # write src/gen/qarr/v1/*.ts
//   npm run gen:check    # exit 1 if the committed files differ from what protos/ generates
//   node scripts/gen.mjs --check --protos DIR   # the same against another copy of protos/ (tests)
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const committed = join(pkg, "src", "gen");
const at = process.argv.indexOf("--protos");
const protos = at > 0 ? process.argv[at + 1] : join(pkg, "..", "..", "protos");

function files(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      e.isDirectory() ? walk(p) : out.push(relative(dir, p));
    }
  };
  try {
    walk(dir);
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  return out.sort();
}

const tmp = mkdtempSync(join(tmpdir(), "qarr-ts-gen-"));
try {
  execFileSync(
    join(pkg, "node_modules", ".bin", "buf"),
    ["generate", protos, "--template", "buf.gen.yaml", "-o", tmp],
    {
      cwd: pkg,
      stdio: "inherit",
    },
  );
  const fresh = join(tmp, "src", "gen");
  if (process.argv.includes("--check")) {
    const names = [...new Set([...files(fresh), ...files(committed)])].sort();
    const read = (root, name) => {
      try {
        return readFileSync(join(root, name), "utf8");
      } catch {
        return null;
      }
    };
    const stale = names.filter((n) => read(fresh, n) !== read(committed, n));
    if (stale.length) {
      console.error(`stale generated TypeScript (run: npm run gen):\n  ${stale.join("\n  ")}`);
      process.exit(1);
    }
    console.log(`${names.length} generated TypeScript files are up to date`);
  } else {
    rmSync(committed, { recursive: true, force: true });
    cpSync(fresh, committed, { recursive: true });
    console.log(`wrote ${files(committed).length} files under src/gen`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
