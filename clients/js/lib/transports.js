/* tickrelay client — the transports by name (part of tickrelay.js;
 * clients/js/README.md). */

import { LongPollTransport } from './poll.js';
import { ShortPollTransport } from './snapshot.js';
import { SseTransport } from './sse.js';
import { WsTransport } from './ws.js';

/** Every transport `connect` knows, and the order `auto` tries the streaming ones. */
export const TRANSPORTS = ['ws', 'ws-msgpack', 'sse', 'poll', 'snapshot'];
export const AUTO_ORDER = ['ws', 'sse', 'poll'];

export function makeTransport(client, name) {
  switch (name) {
    case 'ws-msgpack': return new WsTransport(client, true);
    case 'sse': return new SseTransport(client);
    case 'poll': return new LongPollTransport(client);
    case 'snapshot': return new ShortPollTransport(client);
    default: return new WsTransport(client, false);
  }
}
