// The instance's key-value store: a JSON file, loaded into memory at start. Writes of one event
// are buffered in a Transaction (reads see them) and committed together: the whole store is
// written to a temporary file, flushed to disk and renamed over the old one, so after a crash
// the file holds either every write of an event or none. Simple, and fine for small stores;
// a production host would use an embedded database with atomic batches instead.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Bytewise key order, as the contract requires (JS string order is UTF-16, not UTF-8). */
const byBytes = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** The store in memory: the worker's copy of the KV (see worker.js), and FileKv's base. */
export class MemoryKv {
  constructor(map = new Map()) {
    this.map = map;
    this.sorted = null; // keys in order, rebuilt lazily after a change
  }

  keys() {
    this.sorted ??= [...this.map.keys()].sort(byBytes);
    return this.sorted;
  }

  /** Applies committed writes (a Map of key -> value, or null for a delete). */
  apply(writes) {
    for (const [k, v] of writes) {
      if (v === null) this.map.delete(k);
      else this.map.set(k, v);
    }
    if (writes.size > 0) this.sorted = null;
  }
}

export class FileKv extends MemoryKv {
  constructor(path) {
    super();
    this.path = path;
    mkdirSync(dirname(path), { recursive: true });
    if (existsSync(path)) {
      for (const [k, v] of Object.entries(JSON.parse(readFileSync(path, 'utf8')))) {
        this.map.set(k, new Uint8Array(Buffer.from(v, 'base64')));
      }
    }
  }

  /** Applies a transaction's writes atomically and durably. */
  commit(writes) {
    if (writes.size === 0) return;
    const next = new Map(this.map);
    for (const [k, v] of writes) {
      if (v === null) next.delete(k);
      else next.set(k, v);
    }
    const json = {};
    for (const [k, v] of next) json[k] = Buffer.from(v).toString('base64');
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, JSON.stringify(json));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    this.map = next;
    this.sorted = null;
  }
}

/** One event's view of the store: reads see its own writes; nothing is stored until commit. */
export class Transaction {
  constructor(kv) {
    this.kv = kv;
    this.writes = new Map(); // key -> Uint8Array, or null for a delete
  }

  get(key) {
    if (this.writes.has(key)) return this.writes.get(key) ?? undefined;
    return this.kv.map.get(key);
  }

  set(key, value) {
    this.writes.set(key, new Uint8Array(value));
  }

  delete(key) {
    this.writes.set(key, null);
  }

  cas(key, expected, value) {
    const current = this.get(key);
    const same = current === undefined || expected === undefined
      ? current === expected
      : Buffer.compare(Buffer.from(current), Buffer.from(expected)) === 0;
    if (!same) return false;
    if (value === undefined) this.delete(key);
    else this.set(key, value);
    return true;
  }

  /** Keys starting with `prefix`, after `cursor`, at most `limit`, merged with own writes. */
  scanPrefix(prefix, cursor, limit) {
    limit = Math.min(Math.max(limit, 1), 10_000);
    const keys = new Set(this.kv.keys().filter((k) => k.startsWith(prefix)));
    for (const k of this.writes.keys()) if (k.startsWith(prefix)) keys.add(k);
    const ordered = [...keys].sort(byBytes)
      .filter((k) => cursor === undefined || byBytes(k, cursor) > 0)
      .filter((k) => this.get(k) !== undefined);
    const entries = ordered.slice(0, limit).map((key) => ({ key, value: this.get(key) }));
    const next = ordered.length > limit ? entries[entries.length - 1].key : undefined;
    return { entries, next };
  }
}
