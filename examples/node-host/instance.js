// One instance: its event queue, its durable KV and everything the host owns for it (sockets,
// timers, requests). The guest itself runs in a worker thread (sandbox.js, worker.js): the
// queue hands it batches (one `handle` call = one transaction) and gets back the call's KV
// writes and effects; only after the writes are on disk are the effects performed here.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FileKv } from './kv.js';
import { GuestWorker } from './sandbox.js';
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
    this.master = master;
    this.dir = join(dataDir, config.name);
    mkdirSync(this.dir, { recursive: true });
    this.kv = new FileKv(join(this.dir, 'kv.json'));
    this.keysDir = join(this.dir, 'keys');
    // Host-owned ids: one sequence for requests, sockets, timers and inbound requests, shared
    // with the guest's worker (which hands out the ids of what the guest starts).
    this.ids = new BigInt64Array(new SharedArrayBuffer(8));
    this.ids[0] = 1n;
    this.inbound = new Map(); // id -> pending inbound response (see http.js)
    this.sockets = new Map(); // id -> { ws, open }
    this.outbound = new Map(); // id -> AbortController
    this.timers = new Map(); // id -> Timeout
    this.queue = [];
    this.pumping = false;
    this.live = null; // the GuestWorker running the guest
    this.swaps = 0;
    this.restarts = 0;
  }

  freshId() {
    return Atomics.add(this.ids, 0, 1n);
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
    const outcome = await this.call(this.live, batch);
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
      const outcome = await this.call(this.live, [event]);
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
   * One `handle` call as one transaction. A trap (or running past the deadline, or out of
   * memory) ends the guest's worker (its memory may be inconsistent); an `err` result keeps it.
   * Either way the writes and effects are discarded.
   */
  async call(live, events) {
    this.metrics.add('nodehost_events_total', this.name, [], events.length);
    const answer = await live.handle(events, [...this.inbound.keys()], [...this.sockets.keys()]);
    this.recordMetrics(answer.metrics);
    if (answer.outcome === 'refused') return { refused: answer.payload };
    if (answer.outcome !== 'ok') return this.dropped(live, answer.message);
    try {
      this.kv.commit(new Map(answer.writes));
    } catch (e) {
      this.log.error(`${this.name}: commit failed: ${e.message}`);
      return this.dropped(live, `commit failed: ${e.message}`);
    }
    live.committed(true);
    for (const effect of answer.effects) this.perform(effect);
    return { committed: true };
  }

  /** Ends a guest whose call failed; the next event starts a fresh one from KV. */
  dropped(live, message) {
    this.metrics.add('nodehost_traps_total', this.name, [], 1);
    if (message.startsWith('interrupted')) this.metrics.add('nodehost_interruptions_total', this.name, [], 1);
    this.log.warn(`${this.name}: guest trapped; its writes and effects were discarded: ${message}`);
    live.stop();
    if (live === this.live) this.live = null;
    return { trapped: message };
  }

  recordMetrics(updates = []) {
    for (const [op, name, labels, value] of updates) {
      if (op === 'add') this.metrics.add(name, this.name, labels, value);
      else this.metrics.set(name, this.name, labels, value);
    }
  }

  /** Performs one effect of a committed call, in call order. */
  perform(effect) {
    switch (effect.kind) {
      case 'respond': return this.inbound.get(effect.id)?.answer(effect.resp);
      case 'http-start': return startRequest(this, effect.id, effect.req);
      case 'http-cancel': return cancelRequest(this, effect.id);
      case 'ws-connect': return connectWebSocket(this, effect.id, effect.url, effect.headers);
      case 'ws-send': return sendFrame(this, effect.id, effect.frame);
      case 'ws-close': return closeWebSocket(this, effect.id, effect.code, effect.reason);
      case 'timer-set': return setTimer(this, effect.id, effect.afterMs, effect.tag);
      case 'timer-cancel': return cancelTimer(this, effect.id);
      default: throw new Error(`unknown effect ${effect.kind}`);
    }
  }

  async init(live, reason, fromVersion, snapshot) {
    const info = { reason, fromVersion, snapshot, openWebsockets: this.openWebsockets() };
    const outcome = await this.call(live, [{ tag: 'init', val: info }]);
    if (outcome.refused !== undefined) throw new Error(`init refused: ${outcome.refused}`);
    if (outcome.trapped) throw new Error(`init trapped: ${outcome.trapped}`);
  }

  openWebsockets() {
    return [...this.sockets.values()].map((s) => s.open).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** A new worker running `plugin`, initialised for `reason`; ended again if init fails. */
  async spawn(plugin, reason, fromVersion, snapshot) {
    const live = await GuestWorker.start(this, plugin);
    try {
      await this.init(live, reason, fromVersion, snapshot);
    } catch (e) {
      live.stop();
      throw e;
    }
    return live;
  }

  async start() {
    this.live = await this.spawn(this.plugin, 'start');
  }

  /** Makes sure a guest is alive, restarting from KV with init(restart) after a trap. */
  async ensureLive() {
    if (this.live) return true;
    try {
      this.live = await this.spawn(this.plugin, 'restart');
      this.restarts += 1;
      return true;
    } catch (e) {
      this.log.error(`${this.name}: guest restart failed: ${e.message}`);
      return false;
    }
  }

  /** A fresh guest instance from KV, as after a trap (control: POST /instances/<name>/restart). */
  restart() {
    return this.between(async () => {
      this.live?.stop();
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
      const old = this.live;
      let snapshot;
      if (old) {
        const answer = await old.snapshot();
        this.recordMetrics(answer.metrics);
        if (answer.outcome === 'ok') snapshot = answer.snapshot;
        else this.log.warn(`${this.name}: old guest failed in snapshot: ${answer.message ?? answer.payload}`);
      }
      // If the new guest fails to start, the old one keeps serving (unless its snapshot trapped).
      const next = await this.spawn(plugin, 'upgrade', old?.version, snapshot);
      old?.stop();
      this.live = next;
      this.plugin = plugin;
      this.swaps += 1;
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
