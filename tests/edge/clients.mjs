// Browser-like clients for tests/it/edge.rs, through HAProxy's TLS frontend.
// Node's built-in modules only; the certificate is verified against the CA
// the test generated.
//
//   node clients.mjs sse PORT CA_PEM SYMBOLS STREAMS DEADLINE_MS
//     ONE HTTP/2 connection (ALPN h2) carrying STREAMS concurrent
//     `GET /v1/stream?symbols=…` streams, each held open until every one of
//     them has had a `tick` event.
//   node clients.mjs ws PORT CA_PEM SYMBOLS DEADLINE_MS
//     a WebSocket over HTTP/1.1 (ALPN http/1.1): the upgrade, a subscribe,
//     a snapshot and ticks, then the closing handshake.
//
// Prints one JSON report on stdout, even when the deadline passes first:
// the Rust test judges it.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import tls from 'node:tls';

const [mode, port, caPath, symbolsArg, ...rest] = process.argv.slice(2);
const ca = fs.readFileSync(caPath);
const symbols = symbolsArg.split(',');

function report(r) {
  process.stdout.write(JSON.stringify(r) + '\n');
}

// Splits SSE text into events; returns the unparsed tail.
function sseEvents(text, onEvent) {
  let at;
  while ((at = text.indexOf('\n\n')) >= 0) {
    const block = text.slice(0, at);
    text = text.slice(at + 2);
    const ev = { event: 'message', data: '' };
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) ev.event = line.slice(7);
      else if (line.startsWith('data: ')) ev.data += line.slice(6);
    }
    if (!block.startsWith(':')) onEvent(ev);
  }
  return text;
}

async function sse(streams, deadlineMs) {
  const r = {
    alpn: null,
    authorized: null,
    extended_connect: null,
    connections: 0,
    streams: [],
    error: null,
  };
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca });
  session.on('connect', (s, socket) => {
    r.connections += 1;
    r.alpn = socket.alpnProtocol;
    r.authorized = socket.authorized;
  });
  session.on('error', (e) => {
    r.error = r.error ?? String(e);
  });
  // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): a browser opens its
  // WebSockets over this HTTP/2 connection only when it is advertised.
  session.on('remoteSettings', (s) => {
    r.extended_connect = Boolean(s.enableConnectProtocol);
  });

  await new Promise((resolve) => {
    const timer = setTimeout(resolve, deadlineMs);
    const done = () => {
      if (r.streams.length === streams && r.streams.every((s) => s.ticks > 0)) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (let i = 0; i < streams; i++) {
      // Each stream its own pair of symbols, as tabs watch different things.
      const mine = [symbols[(2 * i) % symbols.length], symbols[(2 * i + 1) % symbols.length]];
      const s = { symbols: mine, status: null, content_type: null, snapshots: 0, ticks: 0, ended: false };
      r.streams.push(s);
      const req = session.request({
        ':path': `/v1/stream?symbols=${mine.join(',')}`,
        accept: 'text/event-stream',
      });
      req.setEncoding('utf8');
      req.on('response', (h) => {
        s.status = h[':status'];
        s.content_type = h['content-type'] ?? null;
      });
      let buf = '';
      req.on('data', (chunk) => {
        buf = sseEvents(buf + chunk.replace(/\r\n/g, '\n'), (ev) => {
          if (ev.event === 'snapshot') s.snapshots += 1;
          if (ev.event === 'tick') {
            let quotes;
            try {
              quotes = JSON.parse(ev.data).quotes ?? [];
            } catch (e) {
              s.error = s.error ?? `not JSON: ${e}`;
              return;
            }
            if (quotes.every((q) => mine.includes(q.symbol))) s.ticks += 1;
            else s.foreign = (s.foreign ?? 0) + 1;
          }
          done();
        });
      });
      req.on('end', () => {
        s.ended = true;
      });
      req.on('error', (e) => {
        s.error = String(e);
      });
    }
  });
  // Whether every stream was still open when the last one had its tick.
  r.open_at_end = r.streams.filter((s) => !s.ended && !s.error).length;
  session.destroy();
  return r;
}

// One WebSocket frame, masked as a client must (RFC 6455 §5.3).
function clientFrame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len])
    : Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// Parses unmasked server frames off the front of `buf`; returns the rest.
function serverFrames(buf, onFrame) {
  for (;;) {
    if (buf.length < 2) return buf;
    const opcode = buf[0] & 0x0f;
    const masked = (buf[1] & 0x80) !== 0;
    let len = buf[1] & 0x7f;
    let at = 2;
    if (len === 126) {
      if (buf.length < 4) return buf;
      len = buf.readUInt16BE(2);
      at = 4;
    } else if (len === 127) {
      if (buf.length < 10) return buf;
      len = Number(buf.readBigUInt64BE(2));
      at = 10;
    }
    if (buf.length < at + len) return buf;
    onFrame({ opcode, fin: (buf[0] & 0x80) !== 0, masked, payload: buf.subarray(at, at + len) });
    buf = buf.subarray(at + len);
  }
}

async function ws(deadlineMs) {
  const r = {
    alpn: null,
    authorized: null,
    status: null,
    accept_ok: null,
    subscribed: null,
    snapshots: 0,
    ticks: 0,
    foreign: 0,
    masked_from_server: 0,
    close_code: null,
    error: null,
  };
  const mine = symbols.slice(0, 3);
  const key = crypto.randomBytes(16).toString('base64');
  const want = crypto
    .createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  await new Promise((resolve) => {
    const timer = setTimeout(finish, deadlineMs);
    let finished = false;
    function finish() {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve();
    }
    const socket = tls.connect({ host: '127.0.0.1', port: Number(port), ca, ALPNProtocols: ['http/1.1'] });
    socket.on('error', (e) => {
      r.error = r.error ?? String(e);
      finish();
    });
    socket.on('close', finish);
    socket.on('secureConnect', () => {
      r.alpn = socket.alpnProtocol;
      r.authorized = socket.authorized;
      socket.write(
        'GET /v1/ws HTTP/1.1\r\n' +
          `Host: localhost:${port}\r\n` +
          'Upgrade: websocket\r\n' +
          'Connection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${key}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    let head = null;
    let buf = Buffer.alloc(0);
    let closing = false;
    let text = [];
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (head === null) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        r.status = Number(head.split(' ')[1]);
        const accept = /^sec-websocket-accept:\s*(\S+)/im.exec(head);
        r.accept_ok = accept !== null && accept[1] === want;
        if (!r.accept_ok) r.head = head;
        if (r.status !== 101) {
          r.error = `no upgrade: ${head}`;
          return finish();
        }
        socket.write(clientFrame(1, JSON.stringify({ op: 'subscribe', symbols: mine })));
      }
      buf = serverFrames(buf, (f) => {
        if (f.masked) r.masked_from_server += 1;
        // A fragmented text message: its pieces, then the whole of it.
        if (f.opcode === 1 || f.opcode === 0) {
          text = f.opcode === 1 ? [f.payload] : [...text, f.payload];
          if (!f.fin) return;
          let msg;
          try {
            msg = JSON.parse(Buffer.concat(text).toString('utf8'));
          } catch (e) {
            r.error = r.error ?? `not JSON: ${e}`;
            return finish();
          }
          if (msg.type === 'subscribed') r.subscribed = msg.symbols;
          if (msg.type === 'snapshot') r.snapshots += 1;
          if (msg.type === 'ticks') {
            if ((msg.quotes ?? []).every((q) => mine.includes(q.symbol))) r.ticks += 1;
            else r.foreign += 1;
          }
          if (msg.type === 'error') r.error = r.error ?? JSON.stringify(msg);
          if (r.ticks > 0 && !closing) {
            // The closing handshake: 1000, and the relay's Close back.
            closing = true;
            socket.write(clientFrame(8, Buffer.from([0x03, 0xe8])));
          }
        } else if (f.opcode === 9) {
          socket.write(clientFrame(10, f.payload));
        } else if (f.opcode === 8) {
          r.close_code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
          finish();
        }
      });
    });
  });
  return r;
}

if (mode === 'sse') {
  const [streams, deadlineMs] = rest.map(Number);
  report(await sse(streams, deadlineMs));
} else if (mode === 'ws') {
  const [deadlineMs] = rest.map(Number);
  report(await ws(deadlineMs));
} else {
  console.error(`usage: node clients.mjs sse|ws PORT CA_PEM SYMBOLS …`);
  process.exit(2);
}
