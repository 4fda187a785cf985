/* tickrelay trading page: the connection and feed status badge. What the
 * page shows from the library's status (connection, feed, retry countdown)
 * and the tab title that carries trouble to a background tab. */

import { toNum } from './tickrelay.js';
import { setText } from './format.js';

const STATUS_TEXT = {
  connecting: 'Connecting',
  live: 'Live',
  stale: 'Feed stale',
  recovering: 'Recovering',
  reconnecting: 'Reconnecting',
  disconnected: 'Disconnected',
  idle: 'Idle',
};

/** The badge's status and detail text. `s` holds the page's view of the
 *  connection: `conn` ('up' or the library's connection state), `feedStatus`,
 *  `feedDetail`, `uncertain` and `retryAt` (performance.now() ms, 0: none). */
export function statusView(s) {
  let status;
  let detail = '';
  if (s.conn === 'up') {
    status = s.feedStatus;
    if (status === 'stale') detail = 'no feed data';
    else if (status === 'recovering' && s.uncertain) {
      const d = s.feedDetail || {};
      const parts = ['rebuilding prices'];
      if (toNum(d.incomplete)) parts.push(toNum(d.incomplete) + ' symbols uncertain');
      if (toNum(d.lost)) parts.push(toNum(d.lost) + ' messages lost');
      detail = parts.join(' · ');
    } else if (status === 'recovering') detail = 'repairing a gap';
  } else {
    status = s.conn;
    if (s.retryAt) {
      const left = Math.max(0, s.retryAt - performance.now());
      detail = left > 0 ? 'retry in ' + (left / 1000).toFixed(left < 10000 ? 1 : 0) + ' s' : 'connecting…';
    } else if (status === 'idle') {
      detail = 'no symbols';
    }
  }
  return { status, detail };
}

/** Writes the badge (`el`: the #status element, `label`, `detailEl`). */
export function renderBadge(el, label, detailEl, { status, detail }) {
  if (el.dataset.status !== status) {
    el.dataset.status = status;
    document.body.dataset.status = status;
    label.textContent = STATUS_TEXT[status] || status;
    // A background tab shows trouble in its title.
    document.title = status === 'live' || status === 'connecting' ? 'tickrelay' : (STATUS_TEXT[status] || status) + ' · tickrelay';
  }
  setText(detailEl, detail);
}
