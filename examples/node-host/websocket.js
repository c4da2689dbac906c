// WebSockets with the `ws` package: inbound upgrades under an instance's prefix and outbound
// dials. The host owns every connection, so sockets survive a guest restart or hot swap.
import WebSocket, { WebSocketServer } from 'ws';
import { checkAllowed, route } from './http.js';

const encoder = new TextEncoder();

/** Accepts upgrades on the public listener and routes them to instances. */
export function acceptUpgrades(server, instances, maxBodyBytes) {
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxBodyBytes });
  server.on('upgrade', (req, socket, head) => {
    const [instance, path] = route(instances, req.url.split('?')[0]);
    if (!instance) {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const headers = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push({ name: req.rawHeaders[i].toLowerCase(), value: req.rawHeaders[i + 1] });
      const open = {
        id: instance.freshId(), direction: 'inbound', path, headers,
        peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      };
      attach(instance, ws, open);
    });
  });
}

/** Registers an open connection and turns its messages and close into events. */
function attach(instance, ws, open) {
  instance.sockets.set(open.id, { ws, open });
  instance.deliver({ tag: 'ws-open', val: open });
  ws.on('message', (data, isBinary) => {
    if (!instance.sockets.has(open.id)) return;
    const frame = isBinary
      ? { tag: 'binary', val: new Uint8Array(Buffer.concat([].concat(data))) }
      : { tag: 'text', val: data.toString('utf8') };
    instance.deliver({ tag: 'ws-message', val: [open.id, frame] });
  });
  ws.on('close', (code, reason) => {
    // A close the guest asked for removed the entry first: it gets no event for it.
    if (instance.sockets.delete(open.id)) {
      instance.deliver({ tag: 'ws-closed', val: { id: open.id, code, reason: reason.toString('utf8') } });
    }
  });
  ws.on('error', () => {}); // a 'close' follows every error
}

/** Performs a committed `websocket.connect`: `ws-open` on success, `ws-closed` 1006 on failure. */
export function connectWebSocket(instance, id, url, headers) {
  const failed = (reason) => instance.deliver({ tag: 'ws-closed', val: { id, code: 1006, reason } });
  const refused = checkAllowed(instance, url);
  if (refused) return failed(refused.tag === 'denied' ? `denied: ${refused.val}` : refused.val);
  let responseHeaders = [];
  const ws = new WebSocket(url, { headers: Object.fromEntries(headers.map((h) => [h.name, h.value])) });
  ws.on('upgrade', (resp) => {
    for (let i = 0; i < resp.rawHeaders.length; i += 2) responseHeaders.push({ name: resp.rawHeaders[i].toLowerCase(), value: resp.rawHeaders[i + 1] });
  });
  ws.once('error', (e) => {
    if (ws.readyState !== WebSocket.OPEN && !instance.sockets.has(id)) failed(e.message);
  });
  ws.once('open', () => {
    const socket = ws._socket;
    attach(instance, ws, { id, direction: 'outbound', path: url, headers: responseHeaders, peer: `${socket.remoteAddress}:${socket.remotePort}` });
  });
}

export function sendFrame(instance, id, frame) {
  const entry = instance.sockets.get(id);
  if (!entry || entry.ws.readyState !== WebSocket.OPEN) return;
  entry.ws.send(frame.tag === 'text' ? encoder.encode(frame.val) : frame.val, { binary: frame.tag === 'binary' });
}

export function closeWebSocket(instance, id, code, reason) {
  const entry = instance.sockets.get(id);
  instance.sockets.delete(id);
  entry?.ws.close(code, reason);
}
