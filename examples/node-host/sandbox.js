// The main thread's side of a guest worker (worker.js): starting it, one call at a time with a
// watchdog, and stopping it. Node cannot interrupt a synchronous WebAssembly call on the thread
// that makes it, but it can terminate another thread: so the guest runs in a worker, and a call
// that outlives its deadline ends the worker (the caller then starts a fresh one from KV).
import { Worker } from 'node:worker_threads';

const WORKER = new URL('./worker.js', import.meta.url);
// Instantiating includes importing jco's glue; generous, it only bounds a broken start.
const START_DEADLINE_MS = 30_000;

export class GuestWorker {
  /**
   * Starts a worker running `plugin` for `instance` on a copy of its current KV. Resolves once
   * the guest is instantiated; rejects (and leaves nothing running) if it cannot be.
   */
  static async start(instance, plugin) {
    const limits = instance.config.limits;
    const modules = await plugin.modules(limits.memoryBytes);
    const worker = new Worker(WORKER, {
      workerData: {
        dir: plugin.dir,
        modules,
        settings: instance.config.settings,
        kv: instance.kv.map,
        keysDir: instance.keysDir,
        master: instance.master,
        name: instance.name,
        logLevel: instance.log.level,
        ids: instance.ids,
      },
      // Bounds the worker's JavaScript heap (jco's glue, the KV copy); the guest's own linear
      // memory is capped in its module (wasm-limits.js), which this limit does not cover.
      resourceLimits: { maxOldGenerationSizeMb: limits.heapMb, maxYoungGenerationSizeMb: 16 },
    });
    const guest = new GuestWorker(worker, plugin.sha256, limits.eventDeadlineMs);
    const first = await guest.next(START_DEADLINE_MS);
    if (first.type !== 'ready') {
      guest.stop();
      throw new Error(`the guest did not start: ${first.message}`);
    }
    if (!first.apiVersion.startsWith('0.1.')) {
      guest.stop();
      throw new Error(`guest speaks contract ${first.apiVersion}, this host serves 0.1.x`);
    }
    guest.version = first.version;
    return guest;
  }

  constructor(worker, sha256, deadlineMs) {
    this.worker = worker;
    this.sha256 = sha256;
    this.deadlineMs = deadlineMs;
    this.version = null;
    this.dead = null; // why the worker is gone, once it is
    this.waiter = null;
    worker.on('message', (answer) => this.settle(answer));
    // Out of memory (resourceLimits), an uncaught error or an exit: the worker is gone.
    worker.on('error', (e) => this.gone(`the guest's worker failed: ${e.code ?? ''} ${e.message}`.trim()));
    worker.on('exit', (code) => this.gone(`the guest's worker exited (${code})`));
  }

  settle(answer) {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.(answer);
  }

  gone(why) {
    this.dead ??= why;
    this.settle({ type: 'failed', outcome: 'trapped', message: this.dead });
  }

  /** The worker's next message, or a trap if it takes longer than `ms` (the worker is ended). */
  next(ms) {
    if (this.dead) return Promise.resolve({ type: 'failed', outcome: 'trapped', message: this.dead });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.gone(`interrupted: the guest ran for more than ${ms} ms`);
        this.worker.terminate();
      }, ms);
      this.waiter = (answer) => {
        clearTimeout(timer);
        resolve(answer);
      };
    });
  }

  /** One `handle` call; resolves to `{ outcome: 'ok' | 'refused' | 'trapped', ... }`. */
  handle(events, inbound, sockets) {
    const answer = this.next(this.deadlineMs);
    if (!this.dead) this.worker.postMessage({ type: 'handle', events, inbound, sockets });
    return answer;
  }

  /** The guest's `snapshot()`, under the same deadline. */
  snapshot() {
    const answer = this.next(this.deadlineMs);
    if (!this.dead) this.worker.postMessage({ type: 'snapshot' });
    return answer;
  }

  /** Tells the worker whether the last ok call's writes are durable (its KV copy follows). */
  committed(ok) {
    if (!this.dead) this.worker.postMessage({ type: 'committed', ok });
  }

  stop() {
    this.dead ??= 'stopped';
    this.worker.terminate();
  }
}
