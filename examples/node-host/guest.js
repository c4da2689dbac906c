// Loading a guest component: jco turns the .wasm into an ES module with an async
// `instantiate(getCoreModule, imports)`. Output is cached by the component's SHA-256 under
// gen/<sha256>/, so a changed plugin file gets a fresh transpile and an unchanged one none.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as shim from '@bytecodealliance/preview2-shim';

const here = dirname(fileURLToPath(import.meta.url));
const jcoBin = join(here, 'node_modules', '@bytecodealliance', 'jco', 'dist', 'jco.js');
export const cacheDir = join(here, 'gen');

/** Runs `jco transpile --instantiation async` for `wasmPath` unless its output is cached. */
export function transpile(wasmPath) {
  const wasm = readFileSync(wasmPath);
  const sha256 = createHash('sha256').update(wasm).digest('hex');
  const out = join(cacheDir, sha256);
  if (!existsSync(join(out, 'guest.js'))) {
    // Transpile aside, then rename: a crash mid-way never leaves a half-written cache entry.
    const tmp = `${out}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    execFileSync(process.execPath, [jcoBin, 'transpile', wasmPath, '-o', tmp,
      '--instantiation', 'async', '--name', 'guest', '--quiet'], { stdio: ['ignore', 'ignore', 'inherit'] });
    try {
      renameSync(tmp, out);
    } catch (e) {
      // Another host process transpiled the same component at the same time: use theirs.
      rmSync(tmp, { recursive: true, force: true });
      if (!existsSync(join(out, 'guest.js'))) throw e;
    }
  }
  return { sha256, dir: out };
}

/**
 * Loads a component: returns `{ sha256, instantiate(hostImports) }`. Core modules are compiled
 * once per component, so restarting a guest only instantiates.
 */
export async function loadGuest(wasmPath) {
  const { sha256, dir } = transpile(wasmPath);
  const module = await import(pathToFileURL(join(dir, 'guest.js')).href);
  const compiled = new Map();
  const getCoreModule = (name) => {
    if (!compiled.has(name)) compiled.set(name, WebAssembly.compile(readFileSync(join(dir, name))));
    return compiled.get(name);
  };
  return {
    sha256,
    async instantiate(hostImports) {
      const root = await module.instantiate(getCoreModule, importObject(hostImports));
      return root['connector:host/guest@0.1.0'] ?? root.guest;
    },
  };
}

/**
 * The import object: our `connector:host/*` interfaces plus WASI from preview2-shim (a Rust
 * guest's std imports wasi:cli, wasi:io and friends even if it never uses them). jco's
 * generated code looks keys up without the `@version` suffix while its types list them with
 * it, so every lookup strips the version.
 */
function importObject(hostImports) {
  const table = {};
  for (const [pkg, ifaces] of Object.entries(shim)) {
    for (const [name, impl] of Object.entries(ifaces)) {
      if (name.startsWith('_') || typeof impl !== 'object') continue;
      table[`wasi:${pkg}/${name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`] = impl;
    }
  }
  for (const [iface, impl] of Object.entries(hostImports)) table[`connector:host/${iface}`] = impl;
  return new Proxy(table, {
    get: (t, key) => (typeof key === 'string' ? t[key.split('@')[0]] : undefined),
    has: (t, key) => typeof key === 'string' && key.split('@')[0] in t,
  });
}
