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
 * Cuts frames out of the bytes pushed in. Holds at most one partial frame, whose size is
 * capped by the limits before its body is buffered, so a peer cannot make it hold more.
 */
export class FrameParser {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly limits: FrameLimits = DEFAULT_FRAME_LIMITS) {}

  /** Bytes waiting for the rest of their frame. */
  get pending(): number {
    return this.buf.length;
  }

  /** Every whole frame now available; throws SpdyProtocolError on malformed input. */
  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const frames: Frame[] = [];
    while (this.buf.length >= 8) {
      const length = this.buf.readUIntBE(5, 3);
      const control = (this.buf[0]! & 0x80) !== 0;
      const cap = control ? this.limits.maxControlLength : this.limits.maxDataLength;
      if (length > cap) throw new SpdyProtocolError(`${control ? 'control' : 'data'} frame of ${length} bytes exceeds the limit of ${cap}`);
      if (this.buf.length < 8 + length) break;
      const frame = this.buf.subarray(0, 8 + length);
      this.buf = this.buf.subarray(8 + length);
      const parsed = parseFrame(frame);
      if (parsed) frames.push(parsed);
    }
    // Don't pin a large chunk for a few leftover bytes.
    if (this.buf.length > 0 && this.buf.byteOffset > 0) this.buf = Buffer.from(this.buf);
    return frames;
  }
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

export function encodeData(streamId: number, payload: Buffer, fin: boolean): Buffer {
  if (payload.length > 0xffffff) throw new RangeError('DATA payload over 2^24 - 1 bytes');
  const head = Buffer.alloc(8);
  head.writeUInt32BE(streamId & 0x7fffffff, 0);
  head.writeUInt32BE(payload.length, 4);
  head[4] = fin ? FLAG_FIN : 0;
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
