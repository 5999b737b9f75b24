// HPACK (RFC 7541): just enough to decode any client header block and re-encode it.
// The decoder tracks the peer encoder's dynamic table exactly; the encoder writes only
// static-table references and literals, so it never reads or changes the peer's table.
// Used by the authority front (http2-authority.ts); knows nothing of HTTP/2 framing.

export class HpackError extends Error {}

/** RFC 7541 Appendix A; entry i is static index i+1. */
const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''],
  ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
  ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''],
  ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''],
  ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
  ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
];
const STATIC_EXACT = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
  STATIC_EXACT.set(name + '\0' + value, i + 1);
});

/**
 * Code lengths of the HPACK Huffman code (RFC 7541 Appendix B) for symbols 0..255 and
 * EOS (256). The code is canonical: codes are assigned in order of (length, symbol).
 */
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];
const EOS = 256;

/** Binary decoding trie: node n has children at [2n] (bit 0) and [2n+1] (bit 1); a leaf is stored as -(symbol+1). */
const HUFFMAN_TRIE: Int32Array = (() => {
  const symbols = HUFFMAN_LENGTHS.map((_, s) => s).sort((a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b);
  const trie = new Int32Array(2 * 512);
  let nodes = 1;
  let code = 0;
  let prevLen = HUFFMAN_LENGTHS[symbols[0]!]!;
  for (const sym of symbols) {
    const len = HUFFMAN_LENGTHS[sym]!;
    code <<= len - prevLen;
    prevLen = len;
    let node = 0;
    for (let bit = len - 1; bit >= 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (bit === 0) trie[slot] = -(sym + 1);
      else {
        if (trie[slot] === 0) trie[slot] = nodes++;
        node = trie[slot]!;
      }
    }
    code++;
  }
  return trie;
})();

export function huffmanDecode(data: Uint8Array): Buffer {
  const out: number[] = [];
  let node = 0;
  let depth = 0; // bits consumed since the last complete symbol
  let allOnes = true;
  for (const byte of data) {
    for (let bit = 7; bit >= 0; bit--) {
      const b = (byte >>> bit) & 1;
      const next = HUFFMAN_TRIE[2 * node + b]!;
      depth++;
      allOnes &&= b === 1;
      if (next < 0) {
        const sym = -next - 1;
        if (sym === EOS) throw new HpackError('EOS symbol inside a Huffman string');
        out.push(sym);
        node = 0;
        depth = 0;
        allOnes = true;
      } else {
        node = next;
      }
    }
  }
  if (depth > 7 || !allOnes) throw new HpackError('bad Huffman padding');
  return Buffer.from(out);
}

export interface HeaderField {
  name: string;
  value: string;
  /** Sent as "never indexed" (a sensitive field); kept that way when re-encoding. */
  neverIndex: boolean;
}

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  byte(): number {
    if (this.pos >= this.buf.length) throw new HpackError('header block ends inside a field');
    return this.buf[this.pos++]!;
  }
  int(prefixBits: number): number {
    const mask = (1 << prefixBits) - 1;
    let value = this.byte() & mask;
    if (value < mask) return value;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) return value;
      if (shift > 28) throw new HpackError('HPACK integer too large');
    }
  }
  string(): string {
    const huffman = (this.buf[this.pos] ?? 0) & 0x80;
    const len = this.int(7);
    if (this.pos + len > this.buf.length) throw new HpackError('header block ends inside a string');
    const raw = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return (huffman ? huffmanDecode(raw) : raw).toString('latin1');
  }
}

/** An HPACK decoder that tracks the peer encoder's dynamic table exactly. */
export class HpackDecoder {
  private table: Array<[string, string]> = []; // newest first
  private size = 0;
  private maxSize: number;

  /** @param settingsLimit our SETTINGS_HEADER_TABLE_SIZE (the most the encoder may use); @param maxHeaderListBytes decoded-size cap per block. */
  constructor(private readonly settingsLimit = 4096, private readonly maxHeaderListBytes = 256 * 1024) {
    this.maxSize = settingsLimit;
  }

  get dynamicTableSize(): number { return this.size; }
  get dynamicTableEntries(): number { return this.table.length; }

  private entry(index: number): readonly [string, string] {
    if (index <= 0) throw new HpackError('HPACK index 0');
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
    const e = this.table[index - STATIC_TABLE.length - 1];
    if (!e) throw new HpackError(`HPACK index ${index} is beyond the dynamic table`);
    return e;
  }

  private evictTo(limit: number): void {
    while (this.size > limit) {
      const [n, v] = this.table.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }

  private insert(name: string, value: string): void {
    const entrySize = name.length + value.length + 32;
    if (entrySize > this.maxSize) {
      this.table = [];
      this.size = 0;
      return;
    }
    this.evictTo(this.maxSize - entrySize);
    this.table.unshift([name, value]);
    this.size += entrySize;
  }

  decode(block: Buffer): HeaderField[] {
    const r = new Reader(block);
    const fields: HeaderField[] = [];
    let listBytes = 0;
    while (r.pos < block.length) {
      const first = block[r.pos]!;
      let name: string;
      let value: string;
      let neverIndex = false;
      if (first & 0x80) {
        [name, value] = this.entry(r.int(7));
      } else if (first & 0x40) {
        const idx = r.int(6);
        name = idx ? this.entry(idx)[0] : r.string();
        value = r.string();
        this.insert(name, value);
      } else if (first & 0x20) {
        if (fields.length) throw new HpackError('dynamic table size update after a header field');
        const newMax = r.int(5);
        if (newMax > this.settingsLimit) throw new HpackError(`dynamic table size update ${newMax} exceeds ${this.settingsLimit}`);
        this.maxSize = newMax;
        this.evictTo(newMax);
        continue;
      } else {
        neverIndex = (first & 0x10) !== 0;
        const idx = r.int(4);
        name = idx ? this.entry(idx)[0] : r.string();
        value = r.string();
      }
      listBytes += name.length + value.length + 32;
      if (listBytes > this.maxHeaderListBytes) throw new HpackError('header list too large');
      fields.push({ name, value, neverIndex });
    }
    return fields;
  }
}

function encodeInt(out: number[], value: number, prefixBits: number, firstByteFlags: number): void {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) {
    out.push(firstByteFlags | value);
    return;
  }
  out.push(firstByteFlags | mask);
  value -= mask;
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

function encodeString(out: number[], s: string): void {
  const bytes = Buffer.from(s, 'latin1');
  encodeInt(out, bytes.length, 7, 0x00);
  for (const b of bytes) out.push(b);
}

/**
 * Encode a header list using only the static table and literals without indexing
 * (or never-indexed, where the client said so): the decoder's dynamic table is never
 * read or changed.
 */
export function encodeStateless(fields: readonly HeaderField[]): Buffer {
  const out: number[] = [];
  for (const f of fields) {
    const exact = f.neverIndex ? undefined : STATIC_EXACT.get(f.name + '\0' + f.value);
    if (exact !== undefined) {
      encodeInt(out, exact, 7, 0x80);
      continue;
    }
    const nameIdx = STATIC_NAME.get(f.name) ?? 0;
    encodeInt(out, nameIdx, 4, f.neverIndex ? 0x10 : 0x00);
    if (!nameIdx) encodeString(out, f.name);
    encodeString(out, f.value);
  }
  return Buffer.from(out);
}
