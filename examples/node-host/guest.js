// Loading a guest component: jco turns the .wasm into an ES module with an async
// `instantiate(getCoreModule, imports)`. Output is cached by the component's SHA-256 under
// gen/<sha256>/, so a changed plugin file gets a fresh transpile and an unchanged one none.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as shim from '@bytecodealliance/preview2-shim';
import { capMemory } from './wasm-limits.js';

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
 * Loads a component: returns `{ sha256, dir, modules(maxMemoryBytes) }`. Its core modules are
 * compiled once per memory cap (see wasm-limits.js) and handed to each worker that runs the
 * guest, so restarting a guest only instantiates. A component that does not transpile or
 * compile is rejected here, before any instance runs it.
 */
export async function loadGuest(wasmPath, maxMemoryBytes) {
  const { sha256, dir } = transpile(wasmPath);
  const names = readdirSync(dir).filter((f) => f.endsWith('.wasm'));
  const compiled = new Map(); // cap -> Promise<Map<file name, WebAssembly.Module>>
  const modules = (cap) => {
    if (!compiled.has(cap)) {
      compiled.set(cap, Promise.all(names.map(async (n) =>
        [n, await WebAssembly.compile(capMemory(readFileSync(join(dir, n)), cap))])).then((pairs) => new Map(pairs)));
    }
    return compiled.get(cap);
  };
  if (maxMemoryBytes !== undefined) await modules(maxMemoryBytes);
  return { sha256, dir, modules };
}

/** In a worker: instantiates a transpiled component on compiled `modules`; returns its guest. */
export async function instantiateGuest(dir, modules, hostImports) {
  const module = await import(pathToFileURL(join(dir, 'guest.js')).href);
  const root = await module.instantiate((name) => modules.get(name), importObject(hostImports));
  return root['connector:host/guest@0.1.0'] ?? root.guest;
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
