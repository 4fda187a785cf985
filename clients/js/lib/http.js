/* tickrelay client — the relay's HTTP answers: the error shape and the
 * symbols query parameter (part of tickrelay.js; clients/js/README.md). */

/** The `symbols` query parameter: "AAPL,MSFT". */
export const symParam = (syms) => syms.map(encodeURIComponent).join(',');

/** A relay error answer (docs/PROTOCOL.md, "Errors": `{"error":{"code","message"}}`). */
export class HttpError extends Error {
  constructor(status, text) {
    let code = 'http_' + status;
    let message = 'HTTP ' + status;
    try {
      const e = JSON.parse(text).error;
      if (e && e.code) code = e.code;
      if (e && e.message) message = e.message;
    } catch (_) { /* not the JSON error shape */ }
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The symbols an error of `code` names after its last colon: a 404
 *  `unknown_symbol` ("unknown symbol(s): A,B"), a 403 `not_entitled` ("not
 *  in your entitlements: A,B"); none for another error. */
export function symbolsOfError(err, code) {
  if (!(err instanceof HttpError) || err.code !== code) return [];
  const i = err.message.lastIndexOf(':');
  return i < 0 ? [] : err.message.slice(i + 1).split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
}
