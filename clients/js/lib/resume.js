/* tickrelay client — resume state: the cursor a reconnect resumes from, and
 * the merge rule per symbol (part of tickrelay.js; clients/js/README.md). */

import { now } from './time.js';

/** A cursor `{session, seq}` as the wire's resume token, `session:seq`
 *  (`since`, `last_event_id`; docs/PROTOCOL.md); '' for none. */
export const cursorText = (c) => (c ? c.session + ':' + c.seq : '');

/** The session of an SSE event id (`session:seq`), or undefined. */
export function sessionOf(id) {
  const i = id ? id.lastIndexOf(':') : -1;
  return i > 0 ? id.slice(0, i) : undefined;
}

/**
 * The resume cursor and what was passed on per symbol. Bookkeeping only: the
 * client decides what to do about what these methods report.
 *
 * Merge rule, per symbol: a quote is passed on if it belongs to another
 * session, or its `seq` is not older than the one passed on last. Equal seq
 * is let through: a recovered half can change a symbol without moving its
 * seq (the newest half's). That makes REST/stream races, resume overlaps and
 * duplicate deliveries harmless.
 */
export class ResumeState {
  constructor() {
    /** `{session, seq}`: the resume point, from the last envelope; null before the first. */
    this.cursor = null;
    /** Counts adoptions, so an answer asked for before a session switch can be told apart. */
    this.epoch = 0;
    /** When the cursor last moved (the clock of time.js). */
    this.movedAt = 0;
    /** symbol → `{session, seq}` of the quote last passed on. */
    this.shown = new Map();
  }

  /** Whether an envelope of `session` starts a session: the first contact,
   *  or a new feed session (a restarted relay or feed). */
  isNewSession(session) {
    return !this.cursor || session !== this.cursor.session;
  }

  /** Starts over at `session`, `seq`: the old cursor means nothing there.
   *  Returns whether there was a cursor before. */
  adopt(session, seq) {
    const had = !!this.cursor;
    this.cursor = { session, seq };
    this.epoch++;
    this.movedAt = now();
    return had;
  }

  /**
   * An envelope's `seq` in the cursor's session. `kind` is the envelope's
   * (the client's onEnvelope), `sentAt` when a REST answer was asked for.
   * Returns:
   *   'kept'   — the cursor stays (or only goes back to an added snapshot's seq);
   *   'moved'  — the cursor is at `seq` now (or was already);
   *   'reset'  — a whole-subscription snapshot behind the cursor became the
   *              truth: the cursor went back, and its quotes must be taken
   *              even where they look older;
   *   'behind' — a stream envelope behind the cursor: re-read the watchlist.
   * `complete`: the relay holds every symbol's state (its feed status). One
   * that is rebuilding it (a late join: its `seq` stays 0 until it is whole)
   * is behind, not a new truth: a snapshot of it is 'kept', and each
   * symbol's newest quote wins.
   */
  advance(seq, kind, sentAt, complete = true) {
    const c = this.cursor;
    if (kind === 'add') {
      // The new symbols are only as fresh as this snapshot: never resume past it.
      c.seq = Math.min(c.seq, seq);
      return 'kept';
    }
    if (seq >= c.seq) {
      if (seq > c.seq) this.movedAt = now();
      c.seq = seq;
      return 'moved';
    }
    if (kind !== 'full') return 'behind';
    if (complete && (sentAt === undefined || this.movedAt <= sentAt)) {
      // A whole-subscription snapshot behind a cursor that hasn't moved
      // since we asked: the feed restarted under the same session name,
      // or this relay lags. Either way it is the truth now.
      c.seq = seq;
      this.movedAt = now();
      return 'reset';
    }
    // Otherwise the stream moved on while it was in flight; the per-symbol
    // seq check keeps the newer prices.
    return 'kept';
  }

  /** The merge rule: whether a quote of `symbol` at `session`, `seq` is
   *  passed on (always, with `force`); records it when it is. */
  pass(symbol, session, seq, force) {
    const last = this.shown.get(symbol);
    // Strictly older than the one passed on: skip. Equal seq is news.
    if (!force && last && last.session === session && seq < last.seq) return false;
    this.shown.set(symbol, { session, seq });
    return true;
  }

  /** Whether `symbol` ever had a quote passed on. */
  has(symbol) {
    return this.shown.has(symbol);
  }

  /** Forgets `symbol` (unsubscribed): a later subscription starts afresh. */
  forget(symbol) {
    this.shown.delete(symbol);
  }
}
