/**
 * SPDY/3.1 frames at the byte level (pure, no I/O): an incremental parser that cuts a byte
 * stream into frames under size caps, encoders for the frames a server sends, and the
 * (uncompressed) header block format. Compression lives in the session (one zlib context
 * per direction for the whole connection). Layouts: docs streaming-reference.md §2.2–2.3.
 */

export const SPDY_VERSION = 3;

export const FrameType = {
  SYN_STREAM: 1,
  SYN_REPLY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  HEADERS: 8,
  WINDOW_UPDATE: 9,
} as const;

export const FLAG_FIN = 0x01;

export const RstStatus = {
  PROTOCOL_ERROR: 1,
  INVALID_STREAM: 2,
  REFUSED_STREAM: 3,
  CANCEL: 5,
  INTERNAL_ERROR: 6,
  STREAM_IN_USE: 8,
  STREAM_ALREADY_CLOSED: 9,
  FRAME_TOO_LARGE: 11,
} as const;

export const GoawayStatus = { OK: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2 } as const;

/** The most payload one DATA frame carries when we send (the Go side writes 32 KiB). */
export const DATA_CHUNK = 32 * 1024;

export interface FrameLimits {
  /** Largest control frame body accepted (header blocks are tiny in Kubernetes' use). */
  maxControlLength: number;
  /** Largest DATA payload accepted (the protocol allows 2^24 - 1; Go clients send ≤ 32 KiB). */
  maxDataLength: number;
}

export const DEFAULT_FRAME_LIMITS: FrameLimits = { maxControlLength: 16 * 1024, maxDataLength: 1024 * 1024 };

/** A parsed frame. 'data' may be a piece of a DATA frame (FrameParser): its FIN is on its last piece. */
export type Frame =
  | { kind: 'data'; streamId: number; fin: boolean; payload: Buffer }
  | { kind: 'syn_stream'; streamId: number; associatedId: number; fin: boolean; unidirectional: boolean; headerBlock: Buffer }
  | { kind: 'syn_reply'; streamId: number; fin: boolean; headerBlock: Buffer }
  | { kind: 'headers'; streamId: number; fin: boolean; headerBlock: Buffer }
  | { kind: 'rst_stream'; streamId: number; status: number }
  | { kind: 'settings' }
  | { kind: 'ping'; id: number }
  | { kind: 'goaway'; lastGoodStreamId: number; status: number }
  | { kind: 'window_update'; streamId: number; delta: number };

/** A violation that ends the whole connection (the peer is broken or hostile). */
export class SpdyProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpdyProtocolError';
  }
}

/**
 * Cuts frames out of the bytes pushed in. Frames that lie whole in a pushed chunk are views of
 * it (no copy). A DATA frame cut by a chunk's end is handed out in pieces as its bytes come,
 * each a view of its chunk, FIN on the last one: a stream is a byte stream, so nothing of a
 * payload is ever copied or held here, whatever size its header declares. A control frame
 * cut by a chunk's end is checked against maxControlLength (16 KiB) as soon as its header is
 * in and gathered into a buffer of its size (each byte copied once). Re-concatenating the pending
 * bytes with every chunk, as this did before, was quadratic in the frame size: a 1 MiB frame
 * in 1 KiB chunks copied ~512 MiB, a hostile client's 1-byte chunks far more.
 */
export class FrameParser {
  /** The first bytes of a header cut by a chunk's end. */
  private readonly head = Buffer.alloc(8);
  private headLen = 0;
  /** The control frame being gathered (header included): its bytes so far in frame[0, filled), `total` in all. */
  private frame: Buffer | null = null;
  private filled = 0;
  private total = 0;
  /** The DATA frame whose payload is being handed out: bytes still to come, its stream, its FIN. */
  private dataLeft = 0;
  private dataStreamId = 0;
  private dataFin = false;
  /** Bytes copied to gather frames cut by chunk ends (control frames and headers only). */
  gathered = 0;

  constructor(private readonly limits: FrameLimits = DEFAULT_FRAME_LIMITS) {}

  /** Bytes held while waiting for the rest of their frame. */
  get pending(): number {
    return this.frame ? this.filled : this.headLen;
  }

  /** Every frame (and piece of a DATA frame) now available; throws SpdyProtocolError on malformed input. */
  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let off = 0;
    // 0. The rest of the payload of a DATA frame an earlier chunk began.
    if (this.dataLeft > 0) {
      off = this.takeData(chunk, 0, frames);
      if (this.dataLeft > 0) return frames;
    }
    // 1. The frame the previous chunk cut in its header: the header first, then its body.
    if (!this.frame && this.headLen > 0) {
      const n = chunk.copy(this.head, this.headLen, off, off + Math.min(8 - this.headLen, chunk.length - off));
      this.headLen += n;
      this.gathered += n;
      off += n;
      if (this.headLen < 8) return frames;
      this.headLen = 0;
      if (isData(this.head)) {
        this.beginData(this.head, frames);
        off = this.takeData(chunk, off, frames);
        if (this.dataLeft > 0) return frames;
      } else this.startFrame(this.head, 8);
    }
    if (this.frame) {
      const take = Math.min(chunk.length - off, this.total - this.filled);
      const n = chunk.copy(this.frame, this.filled, off, off + take);
      this.filled += n;
      this.gathered += n;
      off += n;
      if (this.filled < this.total) return frames;
      const parsed = parseFrame(this.frame.subarray(0, this.total));
      this.frame = null;
      this.filled = 0;
      if (parsed) frames.push(parsed);
    }
    // 2. Whole frames straight out of the chunk, no copy.
    off += this.cut(chunk.subarray(off), frames);
    // 3. The start of a frame the next chunks finish: a DATA frame's payload so far goes out now.
    const rest = chunk.subarray(off);
    if (rest.length >= 8 && isData(rest)) {
      this.beginData(rest, frames);
      this.takeData(rest, 8, frames);
    } else if (rest.length >= 8) {
      this.startFrame(rest, rest.length);
      this.gathered += rest.length;
    } else if (rest.length > 0) {
      this.headLen = rest.copy(this.head, 0);
      this.gathered += rest.length;
    }
    return frames;
  }

  /** Takes in the header of a DATA frame whose payload comes in pieces; an empty one is handed out at once. */
  private beginData(h: Buffer, frames: Frame[]): void {
    const length = this.frameLength(h);
    const streamId = h.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) throw new SpdyProtocolError('DATA frame on stream 0');
    this.dataStreamId = streamId;
    this.dataFin = (h[4]! & FLAG_FIN) !== 0;
    this.dataLeft = length;
    if (length === 0) frames.push({ kind: 'data', streamId, fin: this.dataFin, payload: Buffer.alloc(0) });
  }

  /** Hands out what chunk[off..] holds of the current DATA frame's payload (a view); returns the new offset. */
  private takeData(chunk: Buffer, off: number, frames: Frame[]): number {
    const take = Math.min(chunk.length - off, this.dataLeft);
    if (take === 0) return off;
    this.dataLeft -= take;
    frames.push({ kind: 'data', streamId: this.dataStreamId, fin: this.dataLeft === 0 && this.dataFin, payload: chunk.subarray(off, off + take) });
    return off + take;
  }

  /** The declared length of the frame whose header starts b, checked against the limits. */
  private frameLength(b: Buffer): number {
    const length = b.readUIntBE(5, 3);
    const control = (b[0]! & 0x80) !== 0;
    const cap = control ? this.limits.maxControlLength : this.limits.maxDataLength;
    if (length > cap) throw new SpdyProtocolError(`${control ? 'control' : 'data'} frame of ${length} bytes exceeds the limit of ${cap}`);
    return length;
  }

  /** Starts gathering the control frame whose first `have` bytes (header included) are in `first`. */
  private startFrame(first: Buffer, have: number): void {
    this.total = 8 + this.frameLength(first);
    this.frame = Buffer.allocUnsafe(this.total); // at most maxControlLength + 8
    this.filled = first.copy(this.frame, 0, 0, have);
  }

  /** Parses whole frames from the front of b; returns how many bytes they took. */
  private cut(b: Buffer, frames: Frame[]): number {
    let o = 0;
    while (b.length - o >= 8) {
      const length = this.frameLength(b.subarray(o, o + 8));
      if (b.length - o < 8 + length) break;
      const parsed = parseFrame(b.subarray(o, o + 8 + length));
      o += 8 + length;
      if (parsed) frames.push(parsed);
    }
    return o;
  }
}

/** Whether the frame whose header starts b is a DATA frame (control bit clear). */
function isData(b: Buffer): boolean {
  return (b[0]! & 0x80) === 0;
}

/** One complete frame (8-byte header + body). Unknown control types are a protocol error, as in spdystream. */
export function parseFrame(f: Buffer): Frame | null {
  const flags = f[4]!;
  const length = f.readUIntBE(5, 3);
  const body = f.subarray(8);
  if ((f[0]! & 0x80) === 0) {
    const streamId = f.readUInt32BE(0) & 0x7fffffff;
    if (streamId === 0) throw new SpdyProtocolError('DATA frame on stream 0');
    return { kind: 'data', streamId, fin: (flags & FLAG_FIN) !== 0, payload: body };
  }
  const version = f.readUInt16BE(0) & 0x7fff;
  if (version !== SPDY_VERSION) throw new SpdyProtocolError(`unsupported SPDY version ${version}`);
  const type = f.readUInt16BE(2);
  const need = (n: number, exact = false) => {
    if (exact ? length !== n : length < n) throw new SpdyProtocolError(`control frame type ${type} with bad length ${length}`);
  };
  const streamIdAt = (o: number) => body.readUInt32BE(o) & 0x7fffffff;
  switch (type) {
    case FrameType.SYN_STREAM: {
      need(10);
      const streamId = streamIdAt(0);
      if (streamId === 0) throw new SpdyProtocolError('SYN_STREAM for stream 0');
      return { kind: 'syn_stream', streamId, associatedId: streamIdAt(4), fin: (flags & FLAG_FIN) !== 0, unidirectional: (flags & 0x02) !== 0, headerBlock: body.subarray(10) };
    }
    case FrameType.SYN_REPLY:
    case FrameType.HEADERS: {
      need(4);
      const streamId = streamIdAt(0);
      if (streamId === 0) throw new SpdyProtocolError('header frame for stream 0');
      return { kind: type === FrameType.SYN_REPLY ? 'syn_reply' : 'headers', streamId, fin: (flags & FLAG_FIN) !== 0, headerBlock: body.subarray(4) };
    }
    case FrameType.RST_STREAM: {
      need(8, true);
      const streamId = streamIdAt(0);
      const status = body.readUInt32BE(4);
      if (streamId === 0 || status === 0) throw new SpdyProtocolError('RST_STREAM with stream 0 or status 0');
      return { kind: 'rst_stream', streamId, status };
    }
    case FrameType.SETTINGS: {
      need(4);
      const count = body.readUInt32BE(0);
      if (length !== 4 + count * 8) throw new SpdyProtocolError(`SETTINGS with ${count} entries in ${length} bytes`);
      return { kind: 'settings' };
    }
    case FrameType.PING:
      need(4, true);
      if (flags !== 0) throw new SpdyProtocolError('PING with flags');
      if (body.readUInt32BE(0) === 0) throw new SpdyProtocolError('PING with id 0');
      return { kind: 'ping', id: body.readUInt32BE(0) };
    case FrameType.GOAWAY:
      need(8, true);
      return { kind: 'goaway', lastGoodStreamId: streamIdAt(0), status: body.readUInt32BE(4) };
    case FrameType.WINDOW_UPDATE:
      need(8, true);
      return { kind: 'window_update', streamId: streamIdAt(0), delta: streamIdAt(4) };
    default:
      throw new SpdyProtocolError(`unknown control frame type ${type}`);
  }
}

function controlFrame(type: number, flags: number, body: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  head.writeUInt16BE(type, 2);
  head.writeUInt32BE(body.length, 4);
  head[4] = flags;
  return Buffer.concat([head, body]);
}

/**
 * The 8 bytes that go before a DATA payload of `length` bytes. The sender writes them and the
 * payload as two buffers of one writev, so the payload is never copied (encodeData joins them).
 */
export function encodeDataHeader(streamId: number, length: number, fin: boolean): Buffer {
  if (length > 0xffffff) throw new RangeError('DATA payload over 2^24 - 1 bytes');
  const head = Buffer.alloc(8);
  head.writeUInt32BE(streamId & 0x7fffffff, 0);
  head.writeUInt32BE(length, 4);
  head[4] = fin ? FLAG_FIN : 0;
  return head;
}

/** A whole DATA frame in one buffer (tests and clients; the server sends encodeDataHeader + payload). */
export function encodeData(streamId: number, payload: Buffer, fin: boolean): Buffer {
  const head = encodeDataHeader(streamId, payload.length, fin);
  return payload.length === 0 ? head : Buffer.concat([head, payload]);
}

/** SYN_REPLY with an already-compressed header block. */
export function encodeSynReply(streamId: number, compressedHeaders: Buffer, fin = false): Buffer {
  const id = Buffer.alloc(4);
  id.writeUInt32BE(streamId & 0x7fffffff);
  return controlFrame(FrameType.SYN_REPLY, fin ? FLAG_FIN : 0, Buffer.concat([id, compressedHeaders]));
}

export function encodeRstStream(streamId: number, status: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(streamId & 0x7fffffff, 0);
  body.writeUInt32BE(status, 4);
  return controlFrame(FrameType.RST_STREAM, 0, body);
}

export function encodePing(id: number): Buffer {
  const body = Buffer.alloc(4);
  body.writeUInt32BE(id >>> 0);
  return controlFrame(FrameType.PING, 0, body);
}

export function encodeGoaway(lastGoodStreamId: number, status: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(lastGoodStreamId & 0x7fffffff, 0);
  body.writeUInt32BE(status, 4);
  return controlFrame(FrameType.GOAWAY, 0, body);
}

export interface HeaderLimits {
  maxCount: number;
  maxBytes: number;
}

/** Uncompressed header block: count(32) then count × [len(32) name len(32) value]; names lowercase. */
export function encodeHeaderBlock(headers: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  const entries = Object.entries(headers);
  const n = Buffer.alloc(4);
  n.writeUInt32BE(entries.length);
  parts.push(n);
  for (const [k, v] of entries) {
    for (const s of [k.toLowerCase(), v]) {
      const b = Buffer.from(s, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      parts.push(len, b);
    }
  }
  return Buffer.concat(parts);
}

/**
 * Decodes an uncompressed header block. Names are matched case-insensitively (lowercased
 * here); several values of one name (NUL-joined) keep the first. A block that does not end
 * exactly where its entries do is malformed.
 */
export function decodeHeaderBlock(block: Buffer, limits: HeaderLimits = { maxCount: 64, maxBytes: 64 * 1024 }): Map<string, string> {
  if (block.length > limits.maxBytes) throw new SpdyProtocolError(`header block of ${block.length} bytes exceeds ${limits.maxBytes}`);
  if (block.length < 4) throw new SpdyProtocolError('header block shorter than its count');
  const count = block.readUInt32BE(0);
  if (count > limits.maxCount) throw new SpdyProtocolError(`header block with ${count} headers (limit ${limits.maxCount})`);
  const out = new Map<string, string>();
  let o = 4;
  const take = (): string => {
    if (o + 4 > block.length) throw new SpdyProtocolError('header block truncated');
    const len = block.readUInt32BE(o);
    o += 4;
    if (len > block.length - o) throw new SpdyProtocolError('header block truncated');
    const s = block.toString('utf8', o, o + len);
    o += len;
    return s;
  };
  for (let i = 0; i < count; i++) {
    const name = take().toLowerCase();
    const value = take();
    if (name === '') throw new SpdyProtocolError('header with an empty name');
    if (!out.has(name)) out.set(name, value.split('\0')[0]!);
  }
  if (o !== block.length) throw new SpdyProtocolError('trailing bytes after the header block');
  return out;
}
