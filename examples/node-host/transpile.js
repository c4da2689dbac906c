// Warms the transpile cache (gen/<sha256>/) for the given components, so that the host's
// start-up does not include jco's transpile step: `node transpile.js a.wasm b.wasm ...`.
// Missing files are skipped with a note (e.g. plugins/microsoft365.wasm before `make guest`).
import { existsSync } from 'node:fs';
import { transpile } from './guest.js';

for (const path of process.argv.slice(2)) {
  if (!existsSync(path)) {
    console.log(`skipped ${path}: not built yet`);
    continue;
  }
  const { sha256 } = transpile(path);
  console.log(`${path} -> gen/${sha256}/guest.js`);
}
