// What the suites share: the real relay and feed-simulator binaries on
// loopback, free ports, a multicast group of one's own, and waiting for a
// witness with a deadline. Not a test file: the suites are *.test.mjs.
//
// Binaries: $TICKRELAY_BIN and $FEED_SIMULATOR_BIN, else target/release/.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { connect } from '../tickrelay.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
export const RELAY_BIN = process.env.TICKRELAY_BIN || path.join(root, 'target/release/tickrelay');
export const SIM_BIN = process.env.FEED_SIMULATOR_BIN || path.join(root, 'target/release/feed-simulator');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns `{done: true}`; fails naming `what` and the last `seen`. */
export async function waitFor(what, probe, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (last && last.done) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last && last.seen)}`);
    await sleep(100);
  }
}

export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function freeUdpPort() {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A group and port of this suite's own (the Rust tests use 239.255.10-209.x,
 *  the browser test 210-249): `GROUP:PORT`. */
export function uniqueGroup() {
  return `239.255.${250 + (process.pid % 5)}.${1 + Math.floor(Math.random() * 250)}:${31000 + (process.pid % 1000)}`;
}

const children = new Set();

/** Spawns `bin ARGS` (log level warn); killed by `killAll`. */
export function run(bin, args) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.stderr.on('data', () => {});
  return child;
}

export function killAll() {
  for (const c of children) c.kill('SIGKILL');
}

/** `tickrelay ARGS`, once it prints that it listens. */
export function startRelay(args) {
  const child = run(RELAY_BIN, args);
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (c) => {
      buf += c;
      if (/tickrelay listening on/.test(buf)) resolve(child);
    });
    child.on('exit', (code, sig) => reject(new Error(`relay exited (${sig || code}) before listening`)));
  });
}

/** A feed-simulator of `symbols` symbols at `rate` msg/s (feed session
 *  `session`, more simulator arguments in `extra`) and a relay reading it
 *  with its retransmission server (more relay arguments in `relayExtra`), ready; returns the relay's base URL and
 *  the simulator's process. */
export async function startMarket(session, symbols, extra = [], relayExtra = [], rate = 400) {
  const group = uniqueGroup();
  const port = await freeTcpPort();
  const retransmit = `127.0.0.1:${await freeUdpPort()}`;
  const base = `http://127.0.0.1:${port}`;
  const sim = run(SIM_BIN, [
    '--group', group, '--interface', '127.0.0.1', '--ttl', '0', '--no-progress', ...extra,
    '--retransmit', retransmit, '--symbols', String(symbols), '--rate', String(rate), '--duration', '600', '--session', session,
  ]);
  await startRelay(['serve', '--http', `127.0.0.1:${port}`, '--feed-a', group, '--interface', '127.0.0.1', '--retransmit', retransmit, ...relayExtra]);
  await waitReady(base);
  return { base, sim };
}

/** Waits until the relay at `base` answers /readyz with 200. */
export function waitReady(base) {
  return waitFor('the relay to be ready', async () => {
    try {
      const r = await fetch(base + '/readyz');
      return { done: r.status === 200, seen: r.status };
    } catch (e) {
      return { done: false, seen: e.message };
    }
  });
}

/** A client of the relay at `base` that records what it is given: quotes
 *  (and whether any went back), statuses, symbols reported unknown or
 *  denied, notices, traffic. */
export function record(base, options) {
  const seen = {
    quotes: [], rest: 0, ticks: 0, statuses: [], latest: new Map(), regressions: 0,
    unknown: [], denied: [], notices: [], bytes: 0, requests: 0,
  };
  const handle = connect(base + '/', {
    ...options,
    onQuote(q, info) {
      seen.quotes.push({ q, info, at: Date.now() });
      if (info.rest) seen.rest++;
      if (!info.snapshot) seen.ticks++;
      const prev = seen.latest.get(q.symbol);
      if (prev && prev.session === q.session && q.seq < prev.seq) seen.regressions++;
      seen.latest.set(q.symbol, q);
    },
    onStatus(s) {
      seen.statuses.push(s);
    },
    onUnknown(list) {
      seen.unknown.push(...list);
    },
    onDenied(list, reason) {
      seen.denied.push(...list.map((symbol) => ({ symbol, reason })));
    },
    onNotice(text, isError) {
      seen.notices.push({ text, isError });
    },
    onTraffic(bytes, requests) {
      seen.bytes += bytes;
      seen.requests += requests;
    },
  });
  return { handle, seen };
}
