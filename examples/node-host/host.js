#!/usr/bin/env node
// A Node.js host for connector guests, built from wit/connector.wit alone.
//
//   node host.js --config host.json
//
// Loads one guest per configured instance, serves /<domain>/<instance>/... (HTTP and
// WebSocket) on the public listener, and hot swap, restart and status on a loopback control
// listener. Prints `listening http=<addr> control=<addr>` once ready.
import { createServer } from 'node:http';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from './config.js';
import { loadGuest } from './guest.js';
import { Instance } from './instance.js';
import { createPublicServer, plain } from './http.js';
import { acceptUpgrades } from './websocket.js';
import { loadMasterKey } from './keys.js';
import { createLog, createMetrics } from './observe.js';

const started = performance.now();
const args = process.argv.slice(2);
const configPath = args[args.indexOf('--config') + 1];
if (!args.includes('--config') || !configPath) {
  console.error('usage: node host.js --config <host.json>');
  process.exit(2);
}
const config = loadConfig(configPath);
const log = createLog(config.log);
const metrics = createMetrics();
const master = loadMasterKey(config.masterKeyFile);
const pluginPath = (name) => join(config.pluginsDir, `${name}.wasm`);

// Instances by "<domain>/<name>"; each plugin file is transpiled and compiled once.
const instances = new Map();
const plugins = new Map();
for (const ic of config.instances) {
  if (!plugins.has(ic.plugin)) plugins.set(ic.plugin, await loadGuest(pluginPath(ic.plugin)));
  const instance = new Instance({ config: ic, dataDir: config.dataDir, master, plugin: plugins.get(ic.plugin), log, metrics });
  await instance.start();
  instances.set(`${ic.domain}/${ic.name}`, instance);
  log.info(`instance ${ic.name} runs ${instance.live.version}`);
}
const byName = (name) => [...instances.values()].find((i) => i.name === name);

const server = createPublicServer({
  instances,
  maxBodyBytes: config.maxBodyBytes,
  responseDeadlineMs: config.responseDeadlineMs,
  extra(req, res) {
    if (req.url === '/healthz' || req.url === '/readyz') return plain(res, 200, 'ok\n');
    if (req.url === '/metrics') return plain(res, 200, metrics.render());
    return false;
  },
});
acceptUpgrades(server, instances, config.maxBodyBytes);

/** Swaps an instance to the current content of its plugin file. */
async function reload(instance) {
  return instance.swap(await loadGuest(pluginPath(instance.config.plugin)));
}

// Control: GET /instances, POST /instances/<name>/reload, POST /instances/<name>/restart.
const control = createServer(async (req, res) => {
  const [, what, name, action] = req.url.split('/');
  if (req.method === 'GET' && what === 'instances' && !name) {
    const list = [...instances.values()].map((i) => ({
      name: i.name, domain: i.config.domain, plugin: i.config.plugin,
      version: i.live?.version ?? null, wasm_sha256: i.plugin.sha256,
      websockets: i.sockets.size, timers: i.timers.size, queue: i.queue.length,
      swaps: i.swaps, restarts: i.restarts,
    }));
    res.setHeader('content-type', 'application/json');
    return res.end(JSON.stringify(list));
  }
  const instance = what === 'instances' ? byName(name) : undefined;
  if (req.method === 'POST' && instance && (action === 'reload' || action === 'restart')) {
    try {
      const version = action === 'reload' ? await reload(instance) : await instance.restart();
      return plain(res, 200, `${action === 'reload' ? 'swapped to' : 'restarted'} ${version}\n`);
    } catch (e) {
      log.error(`${name}: ${action} rejected; the old guest keeps serving: ${e.message}`);
      return plain(res, 409, `rejected: ${e.message}\n`);
    }
  }
  plain(res, 404, 'control: GET /instances, POST /instances/<name>/reload|restart\n');
});

// A changed plugin file is swapped in (a deployment writes aside and renames over).
const seen = new Map(config.instances.map((i) => [i.plugin, signature(pluginPath(i.plugin))]));
function signature(path) {
  try {
    const s = statSync(path);
    return `${s.mtimeMs}/${s.size}`;
  } catch {
    return null;
  }
}
setInterval(() => {
  for (const [plugin, old] of seen) {
    const now = signature(pluginPath(plugin));
    if (now === null || now === old) continue;
    seen.set(plugin, now);
    for (const instance of instances.values()) {
      if (instance.config.plugin === plugin) reload(instance).catch((e) => log.error(`${instance.name}: reload failed: ${e.message}`));
    }
  }
}, config.watchIntervalMs).unref();

const listen = (srv, { host, port }) => new Promise((resolve) => srv.listen(port, host, () => resolve(srv.address())));
const httpAddr = await listen(server, config.listen);
const controlAddr = await listen(control, config.control);
log.info(`host started in ${(performance.now() - started).toFixed(1)} ms`);
console.log(`listening http=${httpAddr.address}:${httpAddr.port} control=${controlAddr.address}:${controlAddr.port}`);

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
