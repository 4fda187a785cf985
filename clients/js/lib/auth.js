/* tickrelay client — the user's token: a string, or a function asked for a
 * fresh one before every connection and request; what a JSON Web Token says
 * about itself (read, never verified: the relay verifies); and when a
 * WebSocket refreshes it (part of tickrelay.js; clients/js/README.md). */

/** Refresh this long before `exp`, when the token lives longer than twice this. */
const REFRESH_BEFORE_MS = 60000;

/**
 * The claims of a JSON Web Token (`sub`, `exp`, the `tickrelay` object with
 * `delay_ms`, `symbols`, `class`…), decoded without verifying anything:
 * for display and timing only. Null when `token` is not a JWT.
 */
export function tokenClaims(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' && !Array.isArray(claims) ? claims : null;
  } catch (_) {
    return null;
  }
}

/** When `token` expires (ms since the epoch) by its `exp`; null when it does not say. */
export function expiresAt(token) {
  const c = tokenClaims(token);
  return c && Number.isFinite(c.exp) ? c.exp * 1000 : null;
}

/**
 * How long to wait before refreshing a token that expires in `leftMs`: a
 * minute before `exp` when it lives longer than two, else at half the time
 * left, and never sooner than a second. The relay warns 30 s before `exp`
 * (`auth_expiring`) and warns again at once for a refreshed token that is
 * itself that short: halving keeps such a token refreshed at a steady pace,
 * not in a loop.
 */
export function refreshDelay(leftMs) {
  if (!(leftMs > 0)) return 0;
  return Math.max(1000, leftMs > 2 * REFRESH_BEFORE_MS ? leftMs - REFRESH_BEFORE_MS : leftMs / 2);
}

/** The `token` option: a string, or a function (sync or async) returning one. */
export class TokenSource {
  constructor(token) {
    this.source = token || null;
  }

  /** Whether a fresh token can be asked for (the option is a function). */
  get refreshable() {
    return typeof this.source === 'function';
  }

  /** The token to use now (the function asked again each time); null for none. */
  async get() {
    const t = typeof this.source === 'function' ? await this.source() : this.source;
    return t ? String(t) : null;
  }
}
