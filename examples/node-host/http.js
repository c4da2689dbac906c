// HTTP both ways: the public listener that routes /<domain>/<instance>/... to instances, and
// outgoing requests (`http-client.start`) checked against the instance's allow-list.
import { createServer } from 'node:http';

/** Hosts or host:port pairs an instance may reach. The message matches apphost's. */
export function checkAllowed(instance, url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return { tag: 'invalid', val: `bad URL ${url}` };
  }
  const defaults = { 'http:': 80, 'ws:': 80, 'https:': 443, 'wss:': 443 };
  if (!(parsed.protocol in defaults)) return { tag: 'invalid', val: `unsupported scheme in ${url}` };
  const host = parsed.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = parsed.port ? Number(parsed.port) : defaults[parsed.protocol];
  const allow = instance.config.allow_outbound;
  if (allow.includes(host) || allow.includes(`${host}:${port}`)) return null;
  return { tag: 'denied', val: `${host}:${port} is not on this instance's outbound allow-list` };
}

// Headers the host sets itself (the contract says so) or that fetch refuses.
const HOST_HEADERS = new Set(['host', 'content-length', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade']);

/** Performs a committed `http-client.start`; the outcome comes back as an `http-response` event. */
export async function startRequest(instance, id, req) {
  const controller = new AbortController();
  instance.outbound.set(id, controller);
  const complete = (result) => {
    // A cancelled request is no longer in the map: its completion is dropped.
    if (instance.outbound.delete(id)) instance.deliver({ tag: 'http-response', val: [id, result] });
  };
  const refused = checkAllowed(instance, req.url);
  if (refused) return complete({ tag: 'err', val: refused });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, Math.max(req.timeoutMs, 1));
  try {
    const headers = req.headers.filter((h) => !HOST_HEADERS.has(h.name.toLowerCase())).map((h) => [h.name, h.value]);
    const hasBody = !['GET', 'HEAD'].includes(req.method) && req.body.length > 0;
    const resp = await fetch(req.url, {
      method: req.method, headers, body: hasBody ? req.body : undefined,
      signal: controller.signal, redirect: 'manual',
    });
    const body = await readLimited(resp, instance.config.max_response_bytes);
    if (body === null) return complete({ tag: 'err', val: { tag: 'too-large' } });
    complete({ tag: 'ok', val: { status: resp.status, headers: [...resp.headers].map(([name, value]) => ({ name, value })), body } });
  } catch (e) {
    complete({ tag: 'err', val: timedOut ? { tag: 'timeout' } : classify(e) });
  } finally {
    clearTimeout(timer);
  }
}

async function readLimited(resp, limit) {
  const chunks = [];
  let size = 0;
  for await (const chunk of resp.body ?? []) {
    size += chunk.length;
    if (size > limit) return null;
    chunks.push(chunk);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

function classify(e) {
  const cause = e?.cause ?? e;
  const code = cause?.code ?? '';
  const text = `${code} ${cause?.message ?? e}`.trim();
  if (/CERT|TLS|SSL/.test(code)) return { tag: 'tls', val: text };
  if (e instanceof TypeError && !e.cause) return { tag: 'invalid', val: text };
  return { tag: 'connection', val: text };
}

export function cancelRequest(instance, id) {
  const controller = instance.outbound.get(id);
  instance.outbound.delete(id);
  controller?.abort();
}

/** Finds the instance for a path `/<domain>/<instance>/rest`; returns [instance, rest]. */
export function route(instances, rawPath) {
  const [, domain, name] = rawPath.split('/');
  const instance = instances.get(`${domain}/${name}`);
  if (!instance) return [null, null];
  return [instance, rawPath.slice(domain.length + name.length + 2) || '/'];
}

/** The public listener. `extra(req, res)` answers host routes (/healthz, /metrics) first. */
export function createPublicServer({ instances, maxBodyBytes, responseDeadlineMs, extra }) {
  return createServer(async (req, res) => {
    if (extra(req, res)) return;
    const [target, query = ''] = req.url.split(/\?(.*)/s);
    const [instance, path] = route(instances, target);
    if (!instance) return plain(res, 404, `no instance serves ${target}\n`);
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > maxBodyBytes) return plain(res, 413, 'request body too large\n', true);
      chunks.push(chunk);
    }
    const id = instance.freshId();
    const deadline = setTimeout(() => answer({ status: 504, headers: [], body: new TextEncoder().encode('the instance did not answer in time\n') }), responseDeadlineMs);
    function answer(resp) {
      if (!instance.inbound.delete(id)) return;
      clearTimeout(deadline);
      res.statusCode = resp.status;
      for (const h of resp.headers) res.appendHeader(h.name, h.value);
      res.end(Buffer.from(resp.body));
    }
    instance.inbound.set(id, { answer });
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push({ name: req.rawHeaders[i].toLowerCase(), value: req.rawHeaders[i + 1] });
    instance.deliver({
      tag: 'http-request',
      val: [id, {
        method: req.method, path, query, headers,
        body: new Uint8Array(Buffer.concat(chunks)),
        peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      }],
    });
  });
}

export function plain(res, status, text, close = false) {
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  if (close) res.setHeader('connection', 'close');
  res.end(text);
  return true;
}
