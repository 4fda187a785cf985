/* tickrelay client — the MessagePack decoder (part of tickrelay.js;
 * clients/js/README.md). */

// ---------------------------------------------------------------------------
// MessagePack decoder: the subset the relay sends (maps, arrays, strings, ints
// up to 64 bits, nil, bool, floats, bin, ext). 64-bit ints go through BigInt
// and come out as Number: only `ts` exceeds 2^53, and it needs microseconds.
// ---------------------------------------------------------------------------

const utf8 = new TextDecoder();

/** Decodes one MessagePack value from bytes (Uint8Array, ArrayBuffer or a view). */
export function decodeMsgpack(input) {
  const bytes = input instanceof Uint8Array ? input
    : ArrayBuffer.isView(input) ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength)
    : new Uint8Array(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;

  const need = (n) => {
    if (pos + n > bytes.length) throw new RangeError('msgpack: truncated at byte ' + pos);
  };
  const read = (n, get) => {
    need(n);
    const v = view[get](pos);
    pos += n;
    return v;
  };
  const u8 = () => read(1, 'getUint8');
  const u16 = () => read(2, 'getUint16');
  const u32 = () => read(4, 'getUint32');
  const str = (n) => {
    need(n);
    const s = utf8.decode(bytes.subarray(pos, pos + n));
    pos += n;
    return s;
  };
  const bin = (n) => {
    need(n);
    const b = bytes.slice(pos, pos + n);
    pos += n;
    return b;
  };
  const ext = (n) => {
    const type = read(1, 'getInt8');
    return { extType: type, data: bin(n) };
  };
  const arr = (n) => {
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = value();
    return a;
  };
  const map = (n) => {
    const o = {};
    for (let i = 0; i < n; i++) {
      const k = value();
      const key = typeof k === 'string' ? k : String(k);
      const v = value();
      // Plain assignment of "__proto__" would set the prototype instead.
      if (key === '__proto__') Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
      else o[key] = v;
    }
    return o;
  };

  function value() {
    const t = u8();
    if (t <= 0x7f) return t; // positive fixint
    if (t >= 0xe0) return t - 0x100; // negative fixint
    if (t <= 0x8f) return map(t & 0x0f);
    if (t <= 0x9f) return arr(t & 0x0f);
    if (t <= 0xbf) return str(t & 0x1f);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xc7: return ext(u8());
      case 0xc8: return ext(u16());
      case 0xc9: return ext(u32());
      case 0xca: return read(4, 'getFloat32');
      case 0xcb: return read(8, 'getFloat64');
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return Number(read(8, 'getBigUint64'));
      case 0xd0: return read(1, 'getInt8');
      case 0xd1: return read(2, 'getInt16');
      case 0xd2: return read(4, 'getInt32');
      case 0xd3: return Number(read(8, 'getBigInt64'));
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return arr(u16());
      case 0xdd: return arr(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new TypeError('msgpack: reserved byte 0x' + t.toString(16) + ' at ' + (pos - 1));
    }
  }

  return value();
}
