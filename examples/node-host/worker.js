// One guest instance in its own worker thread. The main thread keeps the sockets, timers,
// durable KV and the queue; this thread only runs `handle` against a copy of the KV and sends
// back what the call wants done. A guest that never returns blocks only this thread: the main
// thread's watchdog terminates it and starts a fresh worker from the durable KV.
//
// Messages from the main thread:        answers:
//   { type: 'handle', events, inbound,    { outcome: 'ok', writes, effects, metrics }
//     sockets }                            { outcome: 'refused', payload, metrics }
//   { type: 'snapshot' }                   { outcome: 'trapped', message, metrics }
//   { type: 'committed', ok }              (none: the KV copy follows the main thread's commit)
import { parentPort, workerData } from 'node:worker_threads';
import { instantiateGuest } from './guest.js';
import { MemoryKv, Transaction } from './kv.js';
import { keysImport } from './keys.js';
import { createLog } from './observe.js';

const { dir, modules, settings, kv: entries, keysDir, master, name, logLevel, ids } = workerData;
const kv = new MemoryKv(entries);
const log = createLog(logLevel);
const keys = keysImport(keysDir, Buffer.from(master));
// Host-owned ids: one sequence shared with the main thread (inbound requests and sockets get
// theirs there), so an id is never handed out twice.
const freshId = () => Atomics.add(ids, 0, 1n);

// The call in progress: its KV view, the effects it asked for and its metric updates.
let tx = null;
let pending = null; // writes of the last ok call, until the main thread has committed them
let metrics = [];

const imports = {
  types: {},
  kv: {
    get: (key) => tx.kv.get(key),
    set: (key, value) => tx.kv.set(key, value),
    delete: (key) => tx.kv.delete(key),
    cas: (key, expected, value) => tx.kv.cas(key, expected, value),
    scanPrefix: (prefix, cursor, limit) => tx.kv.scanPrefix(prefix, cursor, limit),
  },
  'http-client': {
    start: (req) => {
      const id = freshId();
      tx.effects.push({ kind: 'http-start', id, req });
      return id;
    },
    cancel: (id) => tx.effects.push({ kind: 'http-cancel', id }),
  },
  'http-server': {
    respond: (id, resp) => {
      if (!tx.inbound.has(id) || tx.answered.has(id)) return false;
      tx.answered.add(id);
      tx.effects.push({ kind: 'respond', id, resp });
      return true;
    },
  },
  websocket: {
    connect: (url, headers) => {
      const id = freshId();
      tx.effects.push({ kind: 'ws-connect', id, url, headers });
      return id;
    },
    send: (id, frame) => {
      if (!tx.sockets.has(id)) return false;
      tx.effects.push({ kind: 'ws-send', id, frame });
      return true;
    },
    close: (id, code, reason) => tx.effects.push({ kind: 'ws-close', id, code, reason }),
  },
  timers: {
    set: (afterMs, tag) => {
      const id = freshId();
      tx.effects.push({ kind: 'timer-set', id, afterMs, tag });
      return id;
    },
    cancel: (id) => tx.effects.push({ kind: 'timer-cancel', id }),
  },
  keys,
  config: {
    get: (key) => settings[key],
    getAll: () => Object.keys(settings).sort().map((key) => ({ name: key, value: settings[key] })),
  },
  metrics: {
    counterAdd: (metric, labels, delta) => metrics.push(['add', metric, labels, Number(delta)]),
    gaugeSet: (metric, labels, value) => metrics.push(['set', metric, labels, value]),
  },
  log: {
    write: (level, target, message) => log.guest(level, name, target, message.slice(0, 16384)),
    enabled: (level, target) => log.enabled(level, target),
  },
};

const begin = (inbound = [], sockets = []) => {
  tx = { kv: new Transaction(kv), effects: [], answered: new Set(), inbound: new Set(inbound), sockets: new Set(sockets) };
};

/** Runs `f` as one call into the guest; a trap or refusal leaves the KV copy untouched. */
function guarded(f) {
  const taken = () => {
    const m = metrics;
    metrics = [];
    return m;
  };
  try {
    const result = f();
    return { ...result, metrics: taken() };
  } catch (e) {
    if (e && Object.hasOwn(e, 'payload')) return { outcome: 'refused', payload: String(e.payload), metrics: taken() };
    return { outcome: 'trapped', message: String(e?.message ?? e), metrics: taken() };
  } finally {
    tx = null;
  }
}

let guest;
try {
  guest = await instantiateGuest(dir, modules, imports);
  const apiVersion = guest.apiVersion();
  parentPort.postMessage({ type: 'ready', apiVersion, version: guest.version() });
} catch (e) {
  parentPort.postMessage({ type: 'failed', message: String(e?.message ?? e) });
}

parentPort.on('message', (msg) => {
  if (msg.type === 'committed') {
    if (msg.ok && pending) kv.apply(pending);
    pending = null;
    return;
  }
  if (msg.type === 'snapshot') {
    begin();
    parentPort.postMessage(guarded(() => ({ outcome: 'ok', snapshot: guest.snapshot() })));
    return;
  }
  begin(msg.inbound, msg.sockets);
  const current = tx;
  const answer = guarded(() => {
    guest.handle(msg.events);
    return { outcome: 'ok', writes: [...current.kv.writes], effects: current.effects };
  });
  if (answer.outcome === 'ok') pending = current.kv.writes;
  parentPort.postMessage(answer);
});
