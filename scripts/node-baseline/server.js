// The naive baseline in scripts/bench-e2e.sh: a Node.js `ws` server that
// sends each published quote to every socket subscribed to its symbol, one
// WebSocket message per quote, no conflation, no batching — what a quick
// "WebSocket broadcast" service looks like. It speaks the nchan peer's
// protocol, so the same bridge and load generator drive it:
//   POST /pub/SYMBOL  (body: the quote's JSON)     publish
//   GET  /sub/A,B,C   (WebSocket upgrade)          subscribe
// Usage: node server.js PORT   (listens on 127.0.0.1 only)
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 18650);
const subscribers = new Map(); // symbol -> Set of sockets

const server = http.createServer((req, res) => {
  const m = /^\/pub\/(\w+)$/.exec(req.url);
  if (req.method !== 'POST' || !m) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const set = subscribers.get(m[1]);
    if (set) {
      for (const ws of set) ws.send(body, { binary: false });
    }
    res.writeHead(202).end();
  });
});
server.keepAliveTimeout = 0;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  const m = /^\/sub\/(.+)$/.exec(req.url);
  if (!m) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const symbols = m[1].split(',');
    for (const s of symbols) {
      if (!subscribers.has(s)) subscribers.set(s, new Set());
      subscribers.get(s).add(ws);
    }
    ws.on('close', () => {
      for (const s of symbols) subscribers.get(s)?.delete(ws);
    });
    ws.on('error', () => {});
  });
});

server.listen(port, '127.0.0.1', () => console.log(`node baseline listening on 127.0.0.1:${port}`));
