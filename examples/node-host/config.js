// The host's configuration: a small JSON file. Relative paths are taken relative to the file.
//
// {
//   "listen": "127.0.0.1:8080", "control": "127.0.0.1:9902",
//   "plugins_dir": "plugins", "data_dir": "data", "master_key_file": "secrets/master.key",
//   "log": "info", "max_body_bytes": 4194304, "response_deadline_ms": 30000,
//   "instances": [{ "name": "t", "domain": "example.com", "plugin": "microsoft365",
//                   "password": "...", "allow_outbound": ["graph.microsoft.com"],
//                   "event_deadline_ms": 2000, "memory_limit_mb": 64, "heap_limit_mb": 256,
//                   "settings": { "greeting": "hello", "secret": "env:MY_SECRET" } }]
// }
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';

export function loadConfig(path) {
  const raw = JSON.parse(readFileSync(path, 'utf8'));
  const base = dirname(path);
  const resolve = (p) => (isAbsolute(p) ? p : join(base, p));
  const address = (text, fallback) => {
    const [host, port] = (text ?? fallback).split(/:(?=\d+$)/);
    return { host, port: Number(port) };
  };
  const instances = (raw.instances ?? []).map((i) => {
    for (const key of ['name', 'domain', 'plugin', 'password']) {
      if (typeof i[key] !== 'string' || !i[key]) throw new Error(`instance needs a "${key}"`);
    }
    return {
      name: i.name,
      domain: i.domain,
      plugin: i.plugin,
      allow_outbound: (i.allow_outbound ?? []).map((a) => a.toLowerCase()),
      max_response_bytes: i.max_response_bytes ?? 16 << 20,
      limits: limitsOf(i),
      settings: settingsOf(i, resolve),
    };
  });
  return {
    listen: address(raw.listen, '127.0.0.1:8080'),
    control: address(raw.control, '127.0.0.1:9902'),
    pluginsDir: resolve(raw.plugins_dir ?? 'plugins'),
    dataDir: resolve(raw.data_dir ?? 'data'),
    masterKeyFile: resolve(raw.master_key_file ?? 'secrets/master.key'),
    log: raw.log ?? 'info',
    maxBodyBytes: raw.max_body_bytes ?? 4 << 20,
    responseDeadlineMs: raw.response_deadline_ms ?? 30_000,
    watchIntervalMs: raw.watch_interval_ms ?? 1000,
    instances,
  };
}

/**
 * The sandbox of one instance's guest (same defaults as apphost): how long one `handle` call
 * may run before its worker is ended, the cap on the guest's linear memory, and the cap on its
 * worker's JavaScript heap.
 */
function limitsOf(instance) {
  const positive = (key, fallback) => {
    const v = instance[key] ?? fallback;
    if (!Number.isInteger(v) || v <= 0) throw new Error(`instance ${instance.name}: "${key}" must be a positive integer, not ${JSON.stringify(v)}`);
    return v;
  };
  return {
    eventDeadlineMs: positive('event_deadline_ms', 2000),
    memoryBytes: positive('memory_limit_mb', 64) * 1024 * 1024,
    heapMb: positive('heap_limit_mb', 256),
  };
}

/** Settings as the guest sees them: scalars as text, tables and arrays as JSON text. */
function settingsOf(instance, resolve) {
  const out = {};
  for (const [name, value] of Object.entries(instance.settings ?? {})) {
    out[name] = typeof value === 'object' ? JSON.stringify(value) : reference(String(value), resolve);
  }
  out['instance.name'] = instance.name;
  out['instance.domain'] = instance.domain;
  out['instance.password'] = reference(instance.password, resolve);
  return out;
}

/** `env:NAME` and `file:PATH` values are read from the environment or a file. */
function reference(value, resolve) {
  if (value.startsWith('env:')) {
    const v = process.env[value.slice(4)];
    if (v === undefined) throw new Error(`environment variable ${value.slice(4)} is not set`);
    return v;
  }
  if (value.startsWith('file:')) return readFileSync(resolve(value.slice(5)), 'utf8').trim();
  return value;
}
