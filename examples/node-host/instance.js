// One instance: the guest, its event queue and the transaction of the event in progress.
// Node runs JavaScript on one thread, so the queue is the whole "actor": events from sockets,
// timers and outbound requests are queued, handed to the guest in batches (one `handle` call =
// one transaction), and only after the KV writes are on disk are the effects performed.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FileKv, Transaction } from './kv.js';
import { keysImport } from './keys.js';
import { startRequest, cancelRequest } from './http.js';
import { connectWebSocket, sendFrame, closeWebSocket } from './websocket.js';
import { setTimer, cancelTimer } from './timers.js';

const MAX_BATCH = 64;
const MAX_ATTEMPTS = 3;

export class Instance {
  constructor({ config, dataDir, master, plugin, log, metrics }) {
    this.config = config;
    this.name = config.name;
    this.plugin = plugin;
    this.log = log;
    this.metrics = metrics;
    this.dir = join(dataDir, config.name);
    mkdirSync(this.dir, { recursive: true });
    this.kv = new FileKv(join(this.dir, 'kv.json'));
    this.keys = keysImport(join(this.dir, 'keys'), master);
    // Host-owned ids: one sequence for requests, sockets, timers and inbound requests.
    this.nextId = 1n;
    this.inbound = new Map(); // id -> pending inbound response (see http.js)
    this.sockets = new Map(); // id -> { ws, open }
    this.outbound = new Map(); // id -> AbortController
    this.timers = new Map(); // id -> Timeout
    this.queue = [];
    this.pumping = false;
    this.live = null; // { guest, version }
    this.tx = null;
    this.imports = this.buildImports();
  }

  freshId() {
    return this.nextId++;
  }

  /** The contract's imports. Anything that changes the world is queued as an effect of `tx`. */
  buildImports() {
    const tx = () => this.tx;
    const effect = (f) => this.tx.effects.push(f);
    const settings = this.config.settings;
    return {
      types: {},
      kv: {
        get: (key) => tx().kv.get(key),
        set: (key, value) => tx().kv.set(key, value),
        delete: (key) => tx().kv.delete(key),
        cas: (key, expected, value) => tx().kv.cas(key, expected, value),
        scanPrefix: (prefix, cursor, limit) => tx().kv.scanPrefix(prefix, cursor, limit),
      },
      'http-client': {
        start: (req) => {
          const id = this.freshId();
          effect(() => startRequest(this, id, req));
          return id;
        },
        cancel: (id) => effect(() => cancelRequest(this, id)),
      },
      'http-server': {
        respond: (id, resp) => {
          if (!this.inbound.has(id) || tx().answered.has(id)) return false;
          tx().answered.add(id);
          effect(() => this.inbound.get(id)?.answer(resp));
          return true;
        },
      },
      websocket: {
        connect: (url, headers) => {
          const id = this.freshId();
          effect(() => connectWebSocket(this, id, url, headers));
          return id;
        },
        send: (id, frame) => {
          if (!this.sockets.has(id)) return false;
          effect(() => sendFrame(this, id, frame));
          return true;
        },
        close: (id, code, reason) => effect(() => closeWebSocket(this, id, code, reason)),
      },
      timers: {
        set: (afterMs, tag) => {
          const id = this.freshId();
          effect(() => setTimer(this, id, afterMs, tag));
          return id;
        },
        cancel: (id) => effect(() => cancelTimer(this, id)),
      },
      keys: this.keys,
      config: {
        get: (name) => settings[name],
        getAll: () => Object.keys(settings).sort().map((name) => ({ name, value: settings[name] })),
      },
      metrics: {
        counterAdd: (name, labels, delta) => this.metrics.add(name, this.name, labels, Number(delta)),
        gaugeSet: (name, labels, value) => this.metrics.set(name, this.name, labels, value),
      },
      log: {
        write: (level, target, message) => this.log.guest(level, this.name, target, message.slice(0, 16384)),
        enabled: (level, target) => this.log.enabled(level, target),
      },
    };
  }

  /** Queues an event; events arriving in the same turn of the event loop form one batch. */
  deliver(event) {
    this.queue.push({ event });
    if (!this.pumping) setImmediate(() => this.pump());
  }

  /** Runs `work` between two events (swap, restart) and returns its result. */
  between(work) {
    return new Promise((resolve, reject) => {
      this.queue.push({ work: () => work().then(resolve, reject) });
      if (!this.pumping) setImmediate(() => this.pump());
    });
  }

  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        if (this.queue[0].work) {
          await this.queue.shift().work();
          continue;
        }
        const batch = [];
        while (batch.length < MAX_BATCH && this.queue[0]?.event) batch.push(this.queue.shift().event);
        await this.process(batch);
      }
    } finally {
      this.pumping = false;
    }
  }

  async process(batch) {
    if (!(await this.ensureLive())) {
      for (const event of batch) this.deadLetter(event, 'instance is down');
      return;
    }
    const outcome = this.call(this.live, batch);
    if (outcome.committed) return;
    if (batch.length === 1 && outcome.refused !== undefined) {
      this.log.warn(`${this.name}: guest refused an event: ${outcome.refused}`);
      this.failInbound(batch[0], 'the instance refused the request');
      return;
    }
    // A batch that failed is retried event by event, so one bad event cannot sink the others.
    for (const event of batch) await this.retryAlone(event, batch.length === 1 ? 1 : 0);
  }

  async retryAlone(event, attempts) {
    while (attempts < MAX_ATTEMPTS) {
      if (!(await this.ensureLive())) break;
      const outcome = this.call(this.live, [event]);
      if (outcome.committed) return;
      if (outcome.refused !== undefined) {
        this.failInbound(event, 'the instance refused the request');
        return;
      }
      attempts += 1;
    }
    this.deadLetter(event, 'trapped on every attempt');
  }

  /**
   * One `handle` call as one transaction. A trap drops the guest instance (its memory may be
   * inconsistent); an `err` result keeps it. Either way the writes and effects are discarded.
   */
  call(live, events) {
    this.tx = { kv: new Transaction(this.kv), effects: [], answered: new Set() };
    const tx = this.tx;
    this.metrics.add('nodehost_events_total', this.name, [], events.length);
    try {
      live.guest.handle(events);
    } catch (e) {
      this.tx = null;
      if (e && Object.hasOwn(e, 'payload')) return { refused: String(e.payload) };
      this.metrics.add('nodehost_traps_total', this.name, [], 1);
      this.log.warn(`${this.name}: guest trapped; its writes and effects were discarded: ${e?.message ?? e}`);
      if (live === this.live) this.live = null;
      return { trapped: e };
    }
    this.tx = null;
    try {
      this.kv.commit(tx.kv.writes);
    } catch (e) {
      this.log.error(`${this.name}: commit failed: ${e.message}`);
      if (live === this.live) this.live = null;
      return { trapped: e };
    }
    for (const perform of tx.effects) perform();
    return { committed: true };
  }

  async instantiate(plugin) {
    const guest = await plugin.instantiate(this.imports);
    const api = guest.apiVersion();
    if (!api.startsWith('0.1.')) throw new Error(`guest speaks contract ${api}, this host serves 0.1.x`);
    return { guest, version: guest.version(), sha256: plugin.sha256 };
  }

  init(live, reason, fromVersion, snapshot) {
    const info = { reason, fromVersion, snapshot, openWebsockets: this.openWebsockets() };
    const outcome = this.call(live, [{ tag: 'init', val: info }]);
    if (outcome.refused !== undefined) throw new Error(`init refused: ${outcome.refused}`);
    if (outcome.trapped) throw new Error(`init trapped: ${outcome.trapped.message ?? outcome.trapped}`);
  }

  openWebsockets() {
    return [...this.sockets.values()].map((s) => s.open).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async start() {
    const live = await this.instantiate(this.plugin);
    this.init(live, 'start');
    this.live = live;
  }

  /** Makes sure a guest is alive, restarting from KV with init(restart) after a trap. */
  async ensureLive() {
    if (this.live) return true;
    try {
      const live = await this.instantiate(this.plugin);
      this.init(live, 'restart');
      this.live = live;
      return true;
    } catch (e) {
      this.log.error(`${this.name}: guest restart failed: ${e.message}`);
      return false;
    }
  }

  /** A fresh guest instance from KV, as after a trap (control: POST /instances/<name>/restart). */
  restart() {
    return this.between(async () => {
      this.live = null;
      if (!(await this.ensureLive())) throw new Error('restart failed');
      return this.live.version;
    });
  }

  /** Hot swap between two events: snapshot from the old guest, init(upgrade) on the new one. */
  swap(plugin) {
    return this.between(async () => {
      // The watcher and the control listener may both ask for the same file: swap once.
      if (this.live && plugin.sha256 === this.plugin.sha256) return this.live.version;
      const next = await this.instantiate(plugin);
      let snapshot;
      const old = this.live;
      if (old) {
        try {
          this.tx = { kv: new Transaction(this.kv), effects: [], answered: new Set() };
          snapshot = old.guest.snapshot();
        } catch (e) {
          this.log.warn(`${this.name}: old guest trapped in snapshot: ${e.message}`);
        } finally {
          this.tx = null;
        }
      }
      this.init(next, 'upgrade', old?.version, snapshot);
      this.live = next;
      this.plugin = plugin;
      this.metrics.add('nodehost_swaps_total', this.name, [], 1);
      this.log.info(`${this.name}: swapped ${old?.version ?? '-'} -> ${next.version}`);
      return next.version;
    });
  }

  deadLetter(event, why) {
    this.metrics.add('nodehost_dead_letters_total', this.name, [], 1);
    const line = JSON.stringify({ at: new Date().toISOString(), why, event },
      (_, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v));
    appendFileSync(join(this.dir, 'dead-letters.jsonl'), line + '\n');
    this.log.error(`${this.name}: event dead-lettered: ${why}`);
    this.failInbound(event, 'the instance failed to handle the request');
  }

  /** An inbound request whose event failed gets a 500 at once instead of waiting. */
  failInbound(event, text) {
    if (event.tag !== 'http-request') return;
    const [id] = event.val;
    this.inbound.get(id)?.answer({
      status: 500,
      headers: [{ name: 'content-type', value: 'text/plain; charset=utf-8' }],
      body: new TextEncoder().encode(text),
    });
  }
}
