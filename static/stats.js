/* tickrelay trading page: the clock and the live statistics (rates and
 * latency samples). View-side only: the data comes from the client library
 * (tickrelay.js). */

// ---------------------------------------------------------------------------
// Wall clock with sub-millisecond resolution, for tick-to-screen latency.
// Date.now() has whole-ms resolution; performance.now() is fine-grained but
// monotonic, and can drift from the wall clock (e.g. it pauses during sleep
// on some systems). So we keep offset = wall - monotonic, re-estimated every
// second: Date.now() floors, so the largest recent estimate is the closest.
// ---------------------------------------------------------------------------

export const clock = {
  samples: [],
  offset: Date.now() - performance.now(),
  calibrate() {
    const t = performance.now();
    this.samples.push({ t, o: Date.now() - t });
    while (this.samples.length && t - this.samples[0].t > 30000) this.samples.shift();
    let best = -Infinity;
    for (const s of this.samples) if (s.o > best) best = s.o;
    this.offset = best;
  },
};

/** Wall-clock milliseconds since the epoch, sub-millisecond resolution. */
export const nowMs = () => performance.now() + clock.offset;

/** Events per second over a sliding window of fixed buckets. */
export class Rate {
  constructor(bucketMs, buckets, minSpanMs = 1000) {
    this.bucketMs = bucketMs;
    this.minSpanMs = minSpanMs;
    this.counts = new Float64Array(buckets);
    this.start = performance.now();
    this.head = Math.floor(this.start / bucketMs);
  }

  advance(now) {
    const b = Math.floor(now / this.bucketMs);
    if (b <= this.head) return;
    const n = this.counts.length;
    if (b - this.head >= n) this.counts.fill(0);
    else for (let i = this.head + 1; i <= b; i++) this.counts[i % n] = 0;
    this.head = b;
  }

  add(v) {
    const now = performance.now();
    this.advance(now);
    this.counts[this.head % this.counts.length] += v;
  }

  /** The window's total. */
  sum() {
    this.advance(performance.now());
    let sum = 0;
    for (const c of this.counts) sum += c;
    return sum;
  }

  perSecond() {
    const now = performance.now();
    const sum = this.sum();
    // The window is the full buckets plus the current partial one, and never
    // more than we have been counting (so a fresh transport isn't diluted).
    const span = Math.min((this.counts.length - 1) * this.bucketMs + (now - this.head * this.bucketMs), now - this.start);
    return (sum * 1000) / Math.max(span, this.minSpanMs);
  }
}

/** The last `n` latency samples; percentiles by nearest rank. */
export class Samples {
  constructor(n) {
    this.buf = new Float64Array(n);
    this.len = 0;
    this.i = 0;
  }

  add(v) {
    this.buf[this.i] = v;
    this.i = (this.i + 1) % this.buf.length;
    if (this.len < this.buf.length) this.len++;
  }

  percentile(p) {
    if (!this.len) return null;
    const a = this.buf.slice(0, this.len).sort();
    return a[Math.min(this.len - 1, Math.max(0, Math.ceil(p * this.len) - 1))];
  }
}

/** Live figures of one transport run; fresh on every switch. */
export class Stats {
  constructor() {
    this.updates = new Rate(250, 21); // 5 s
    this.bytes = new Rate(250, 21);
    // 60 s; a few connect requests right after a switch mustn't read as a storm.
    this.requests = new Rate(1000, 61, 10000);
    this.latency = new Samples(1000);
  }

  /** Bytes received per update over the last 5 s (null before any update). */
  bytesPerUpdate() {
    const u = this.updates.sum();
    return u > 0 ? this.bytes.sum() / u : null;
  }
}
