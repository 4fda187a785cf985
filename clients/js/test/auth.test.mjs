// tickrelay.js with users' tokens, against a real relay that verifies them
// (`--jwt-secret-file`) and a real feed-simulator: a token function is asked
// again for every reconnect and every request; a short-lived token is
// refreshed on an open WebSocket, which never closes; an SSE stream the
// relay ends at `exp` comes back at once with a fresh token; symbols the
// token does not allow are reported, on every transport, and so are those
// a refreshed token takes away.
// Tokens are signed here (HS256, Node's crypto) with the relay's secret.
// No sleep stands for a condition: each wait is for a witness.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { expiresAt, tokenClaims } from '../tickrelay.js';
import {
  SIM_BIN, freeTcpPort, freeUdpPort, killAll, record, run, startRelay, uniqueGroup, waitFor, waitReady,
} from './harness.mjs';

const SECRET = crypto.randomBytes(32).toString('hex');
const ADMIN = 'the-admin-token-of-this-suite';
let base = '';
let symbols = [];
let dir = '';

/** A user's token: `sub`, living `ttlS` seconds, seeing `syms` (default all). */
function mint(sub, ttlS, syms = ['*']) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + ttlS, tickrelay: { symbols: syms, delay_ms: 0, class: 'pro' } };
  const head = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return head + '.' + crypto.createHmac('sha256', SECRET).update(head).digest('base64url');
}

/** A token function that counts its calls and signs a fresh token each time. */
function tokens(sub, ttlS, syms) {
  const fn = async () => {
    fn.calls++;
    const t = mint(sub, ttlS, typeof syms === 'function' ? syms() : syms);
    fn.minted.push(t);
    return t;
  };
  fn.calls = 0;
  fn.minted = [];
  return fn;
}

async function getJson(p) {
  const r = await fetch(base + p, { headers: { Authorization: 'Bearer ' + mint('suite', 600) }, cache: 'no-store' });
  if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
  return r.json();
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tickrelay-js-auth-'));
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, SECRET + '\n');
  const group = uniqueGroup();
  const port = await freeTcpPort();
  base = `http://127.0.0.1:${port}`;
  run(SIM_BIN, [
    '--group', group, '--interface', '127.0.0.1', '--ttl', '0', '--no-progress',
    '--retransmit', `127.0.0.1:${await freeUdpPort()}`, '--symbols', '40', '--rate', '400', '--duration', '600', '--session', 'JSAUTH',
  ]);
  await startRelay([
    'serve', '--http', `127.0.0.1:${port}`, '--feed-a', group, '--interface', '127.0.0.1',
    '--jwt-secret-file', secretFile, '--admin-token', ADMIN,
  ]);
  await waitReady(base);
  const d = await waitFor('the directory', async () => {
    const list = await getJson('/v1/symbols');
    return { done: list.symbols.length >= 6, seen: list.symbols.length, list };
  });
  symbols = d.list.symbols.slice(0, 6).map((e) => e.symbol);
});

after(() => {
  killAll();
  fs.rmSync(dir, { recursive: true, force: true });
});

const lastStatus = (seen) => seen.statuses.at(-1) || {};
const liveCount = (seen) => seen.statuses.filter((s, i, all) => s.connection === 'live' && (i === 0 || all[i - 1].connection !== 'live')).length;
/** Ticks (not snapshots) the client was given after `t` (ms since the epoch). */
const ticksAfter = (seen, t) => seen.quotes.filter(({ info, at }) => !info.snapshot && at > t).length;

/** A client of this suite's symbols over `transport` with `token`; once it
 *  ticks, `body(seen)` runs; the client is closed after, whatever happens. */
async function ticking(transport, token, body, extra = {}) {
  const { handle, seen } = record(base, { symbols, transport, token, ...extra });
  try {
    await waitFor('ticks', () => ({ done: seen.ticks >= 3, seen: { ticks: seen.ticks, denied: seen.denied, last: lastStatus(seen) } }));
    await body(seen, handle);
  } finally {
    handle.close();
  }
}

test('the token claims are read without verifying', () => {
  const t = mint('alice', 60, ['A*']);
  assert.equal(tokenClaims(t).sub, 'alice');
  assert.deepEqual(tokenClaims(t).tickrelay.symbols, ['A*']);
  assert.equal(expiresAt(t), tokenClaims(t).exp * 1000);
  assert.equal(tokenClaims('not a token'), null);
  assert.equal(expiresAt(null), null);
});

for (const transport of ['ws', 'sse']) {
  test(`${transport}: a token function is asked again when the client reconnects`, async () => {
    const sub = 'reconnect-' + transport;
    const fn = tokens(sub, 600);
    await ticking(transport, fn, async (seen) => {
      const calls = fn.calls;
      const ticks = seen.ticks;
      // An operator closes the user's connections (4003 / `event: error`).
      const r = await fetch(base + '/v1/admin/disconnect?sub=' + sub, { method: 'POST', headers: { Authorization: 'Bearer ' + ADMIN } });
      assert.equal(r.status, 200, await r.text());
      await waitFor('the client to reconnect and tick again', () => ({
        done: liveCount(seen) >= 2 && lastStatus(seen).connection === 'live' && seen.ticks > ticks + 2,
        seen: { lives: liveCount(seen), last: lastStatus(seen).connection, ticks: seen.ticks },
      }), 30000);
      assert.ok(fn.calls > calls, `the function was asked again (${calls} → ${fn.calls})`);
      assert.equal(seen.regressions, 0);
    });
  });
}

test('poll: a token function is asked for every request', async () => {
  const fn = tokens('poller', 600);
  await ticking('poll', fn, async (seen, handle) => {
    await waitFor('several polls', () => ({ done: seen.requests >= 5, seen: seen.requests }));
    handle.close();
    // One call per request (the last call's request may not be counted yet).
    assert.ok(fn.calls - seen.requests >= 0 && fn.calls - seen.requests <= 1, `${fn.calls} calls, ${seen.requests} requests`);
  });
});

test('ws: a short-lived token is refreshed on the open connection, which never closes', async () => {
  // The relay warns 30 s before `exp`, so at once for a 6 s token, and
  // closes with 4001 at `exp` unless it was handed a fresh one.
  const fn = tokens('shortlived', 6);
  await ticking('ws', fn, async (seen) => {
    const firstExp = Math.min(...fn.minted.map(expiresAt));
    // Two lifetimes of the first token later, still ticking on the first connection.
    await waitFor('ticks two lifetimes past the first token\'s exp', () => {
      const late = ticksAfter(seen, firstExp + 6000);
      return { done: late >= 3, seen: { late, calls: fn.calls, last: lastStatus(seen).connection } };
    }, 40000);
    assert.equal(liveCount(seen), 1, 'one connection: never closed and reopened');
    assert.ok(!seen.statuses.some((s) => s.connection === 'reconnecting'), 'never reconnecting');
    assert.ok(fn.calls >= 3, `refreshed (${fn.calls} tokens)`);
    assert.ok(!seen.notices.some((n) => n.isError), JSON.stringify(seen.notices));
  });
});

test('sse: a stream ended at the token\'s exp resumes at once with a fresh token, missing nothing', async () => {
  const fn = tokens('sse-expiring', 3);
  await ticking('sse', fn, async (seen) => {
    const firstExp = Math.min(...fn.minted.map(expiresAt));
    await waitFor('the stream to end at exp and come back', () => {
      const late = ticksAfter(seen, firstExp + 1000);
      const told = seen.notices.some((n) => /token expired/.test(n.text));
      return { done: told && late >= 3 && liveCount(seen) >= 2, seen: { told, late, lives: liveCount(seen), calls: fn.calls } };
    }, 30000);
    assert.ok(fn.calls >= 3, `a fresh token for the new stream (${fn.calls} tokens)`);
    assert.equal(seen.regressions, 0);
    // Resumed by last_event_id: no second snapshot of the watchlist over REST.
    assert.ok(!seen.quotes.some(({ info, at }) => info.rest && at > firstExp), 'no REST snapshot after the first expiry');
  });
});

for (const transport of ['ws', 'sse', 'poll', 'snapshot']) {
  test(`${transport}: symbols the token does not allow are reported and not asked for`, async () => {
    const allowed = symbols.slice(0, 3);
    await ticking(transport, mint('some-' + transport, 600, allowed), async (seen) => {
      await waitFor('the denied symbols reported', () => ({ done: seen.denied.length === 3, seen: seen.denied }));
      assert.deepEqual(seen.denied.map((d) => d.symbol).sort(), symbols.slice(3).sort());
      assert.ok(seen.denied.every((d) => d.reason === 'not_entitled'));
      assert.ok(seen.quotes.every(({ q }) => allowed.includes(q.symbol)), 'quotes of allowed symbols only');
      assert.equal(lastStatus(seen).connection, 'live');
    }, { pollIntervalMs: 300 });
  });
}

test('ws: a refreshed token that allows less drops the rest, and the client says so', async () => {
  let narrow = false;
  const fn = tokens('narrowed', 4, () => (narrow ? symbols.slice(0, 2) : ['*']));
  await ticking('ws', fn, async (seen) => {
    narrow = true;
    await waitFor('the dropped symbols reported', () => ({ done: seen.denied.length === 4, seen: { denied: seen.denied, calls: fn.calls } }));
    assert.deepEqual(seen.denied.map((d) => d.symbol).sort(), symbols.slice(2).sort());
    // The relay dropped them before it said so: nothing of theirs after.
    const mark = seen.quotes.length;
    await waitFor('ticks of the symbols still allowed', () => ({ done: seen.quotes.length >= mark + 3, seen: seen.quotes.length - mark }));
    const after = seen.quotes.slice(mark).map(({ q }) => q.symbol);
    assert.ok(after.every((s) => symbols.slice(0, 2).includes(s)), `only allowed symbols after: ${after}`);
    assert.equal(liveCount(seen), 1, 'the same connection');
  });
});
