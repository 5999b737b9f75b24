// Accepting the socket path as HTTP/2 :authority (for 1.26-era CRI clients).
//
// The authority problem
// ---------------------
// Kubelet-era CRI clients of the 1.26 line (crictl/critest v1.26.x and kubelets of
// that time) dial a unix socket and send the socket *path* ("/run/corral/corral.sock")
// as the HTTP/2 `:authority`. nghttp2 (the HTTP/2 library inside Node) checks the
// characters of :authority and `host` against the RFC 3986 authority grammar; a '/'
// fails that check and nghttp2 resets the stream with PROTOCOL_ERROR before grpc-js
// ever sees it. Node exposes no option that turns the check off (nghttp2's
// no_http_messaging option is not reachable from JS), so the bytes have to be fixed
// before they reach nghttp2.
//
// How: grpc-js does not listen on the socket itself. Corral's own net.Server accepts
// each connection and hands grpc-js (through `Server.createConnectionInjector`) a
// Duplex (interpose, at the end of this file) that forwards the server's bytes untouched (each
// batch nghttp2 writes in one writev) and passes the client's bytes
// through a small HTTP/2 frame parser (ClientStreamRewriter). The parser keeps an
// HPACK decoder (hpack.ts) whose dynamic table mirrors the client's encoder exactly (every
// header block is decoded, in order, always). While no block needs fixing, the
// client's frames are forwarded byte for byte, so nghttp2's table is the same as
// ours. The first block that carries an invalid :authority/host switches the
// connection to "re-encoded" mode for good: from then on every header block is
// re-encoded with only static-table references and literals *without indexing*.
// Those never touch nghttp2's dynamic table (it simply stays frozen as it was), so
// the client's encoder state (tracked by our decoder) and nghttp2's decoder state
// can never disagree, whatever the client indexes, evicts or resizes. Re-encoded
// blocks are re-framed as HEADERS + CONTINUATION frames of at most 16384 bytes (the
// smallest SETTINGS_MAX_FRAME_SIZE a peer may advertise), keeping END_STREAM and the
// PRIORITY fields; padding is dropped. An invalid authority is replaced by
// "localhost", which is what current clients send.
//
// If the client's bytes cannot be parsed while the connection is still in
// pass-through mode, the rewriter stops interpreting and forwards everything raw,
// so nghttp2 answers the client exactly as it would without Corral in between. In
// re-encoded mode the connection is closed instead (nghttp2's table no longer
// matches the client's, so raw forwarding would be unsafe).
//
// Bounds (hostile clients): pending bytes are kept as the chunks they arrived in and a
// frame is copied once when complete; a header frame may not exceed the advertised
// SETTINGS_MAX_FRAME_SIZE, a header block (HEADERS + CONTINUATION) 256 KiB, and the HPACK
// decoder's table and decoded header list are capped. Request bodies of streams the client
// has not finished are counted per connection and across connections (RequestBodyBudget):
// going over a limit closes the connection.

import net from 'node:net';
import { Duplex } from 'node:stream';
import { HpackDecoder, HpackError, encodeStateless, type HeaderField } from './hpack.js';

/** Characters nghttp2 accepts in :authority / host (RFC 3986 authority: unreserved, sub-delims, ':', '@', '[', ']', '%'). */
const AUTHORITY_OK = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) AUTHORITY_OK[c] = 1;
for (const ch of '"#/<>?\\^`{|}') AUTHORITY_OK[ch.charCodeAt(0)] = 0;

export function isValidAuthority(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (!AUTHORITY_OK[value.charCodeAt(i) & 0xffff] || value.charCodeAt(i) > 0xff) return false;
  return true;
}

/** What an invalid :authority or host is replaced with. */
export const REPLACEMENT_AUTHORITY = 'localhost';

// ─────────────────────────────────────────────────────────────────────────────
// HTTP/2 framing of the client → server byte stream.

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;
const TYPE_HEADERS = 0x1;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** The smallest SETTINGS_MAX_FRAME_SIZE there can be; frames we build never exceed it. */
const MIN_MAX_FRAME_SIZE = 16384;
/**
 * The SETTINGS_MAX_FRAME_SIZE the server side advertises (Node's default; grpc-js does not
 * change it). A client frame longer than this is a FRAME_SIZE_ERROR, so the rewriter never
 * holds more than one such frame of a header block at a time.
 */
export const ADVERTISED_MAX_FRAME_SIZE = 16384;
/** Cap on one compressed header block (all its frames), so a client cannot make us buffer without bound. */
export const MAX_HEADER_BLOCK_BYTES = 256 * 1024;

/**
 * Bytes received but not yet interpreted, kept as the chunks they arrived in: appending is
 * O(1), and each byte is copied at most once when a whole frame is taken (re-concatenating a
 * pending frame on every chunk would be quadratic in the frame size).
 */
class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // chunks before this index are consumed
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The first n bytes (n <= length), not consumed; copied only if they straddle chunks. */
  peek(n: number): Buffer {
    const first = this.chunks[this.head]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (let i = this.head; filled < n; i++) {
      const c = this.chunks[i]!;
      filled += c.copy(out, filled, 0, Math.min(c.length, n - filled));
    }
    return out;
  }

  /** Consumes up to n bytes and returns them as views of the received chunks (no copy). */
  takeViews(n: number): Buffer[] {
    const out: Buffer[] = [];
    while (n > 0 && this.head < this.chunks.length) {
      const c = this.chunks[this.head]!;
      if (c.length <= n) {
        out.push(c);
        this.head++;
        n -= c.length;
        this.length -= c.length;
      } else {
        out.push(c.subarray(0, n));
        this.chunks[this.head] = c.subarray(n);
        this.length -= n;
        n = 0;
      }
    }
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head); // amortised O(1) per chunk
      this.head = 0;
    }
    return out;
  }

  /** Consumes exactly n bytes (n <= length) into a buffer of their own. */
  takeCopy(n: number): Buffer {
    return Buffer.concat(this.takeViews(n), n);
  }

  /** Consumes everything, as received. */
  drain(): Buffer[] {
    const out = this.chunks.slice(this.head);
    this.chunks = [];
    this.head = 0;
    this.length = 0;
    return out;
  }
}

class FramingError extends Error {}

/** The client went over a resource limit: the connection is closed, whatever the mode. */
export class ClientLimitError extends Error {}

/**
 * Request-body bytes held for streams the client has not finished, counted across all
 * connections. grpc-js buffers each request message until it is complete (up to the
 * receive limit), on every open stream of every connection, so without a shared cap a
 * client opening many streams with partial messages could fill the daemon's memory.
 */
export class RequestBodyBudget {
  used = 0;
  constructor(readonly limit: number) {}
}

export interface RewriterLimits {
  /** Most request-body bytes of unfinished streams one connection may hold. */
  maxUnfinishedBodyBytes?: number;
  /** Shared by all connections. */
  shared?: RequestBodyBudget;
}

const TYPE_DATA = 0x0;
const TYPE_RST_STREAM = 0x3;

interface OpenBlock {
  streamId: number;
  endStream: boolean;
  priority: Buffer | null;
  frames: Buffer[];
  fragments: Buffer[];
  bytes: number;
}

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return h;
}

/**
 * Parses the bytes a client sends on one HTTP/2 connection and returns what to hand
 * to nghttp2 instead; see the comment at the top of this file.
 */
export class ClientStreamRewriter {
  /** Number of header blocks whose :authority/host was replaced. */
  rewrites = 0;
  /** True once header blocks are being re-encoded (nghttp2's HPACK table frozen). */
  reencoding = false;
  /** True once the rewriter gave up interpreting (unparseable input before re-encoding started). */
  passthrough = false;
  /** Set to the original authority of the first rewritten block (for logging). */
  originalAuthority: string | undefined;

  private readonly decoder = new HpackDecoder();
  private readonly pending = new ByteQueue();
  private prefaceSeen = 0;
  private payloadToForward = 0;
  private block: OpenBlock | null = null;
  private nextFrame: { length: number; type: number } | null = null;
  /** Per stream: DATA bytes received before the client finished the stream (END_STREAM or RST_STREAM). */
  private readonly unfinishedBodies = new Map<number, number>();
  private unfinishedBodyBytes = 0;
  private readonly maxUnfinishedBodyBytes: number;
  private readonly shared: RequestBodyBudget | undefined;

  constructor(limits: RewriterLimits = {}) {
    this.maxUnfinishedBodyBytes = limits.maxUnfinishedBodyBytes ?? Infinity;
    this.shared = limits.shared;
  }

  /** Whether the client has sent the whole HTTP/2 connection preface (or was handed to nghttp2 raw). */
  get prefaceComplete(): boolean {
    return this.passthrough || this.prefaceSeen >= PREFACE.length;
  }

  /** Request-body bytes this connection holds for unfinished streams. */
  get unfinishedRequestBytes(): number {
    return this.unfinishedBodyBytes;
  }

  /** Returns this connection's share of the budget; call when the connection closes. */
  release(): void {
    if (this.shared) this.shared.used -= this.unfinishedBodyBytes;
    this.unfinishedBodyBytes = 0;
    this.unfinishedBodies.clear();
  }

  private streamFinished(streamId: number): void {
    const n = this.unfinishedBodies.get(streamId);
    if (n === undefined) return;
    this.unfinishedBodies.delete(streamId);
    this.unfinishedBodyBytes -= n;
    if (this.shared) this.shared.used -= n;
  }

  /** Accounts a DATA frame before it is forwarded; throws when a limit would be passed. */
  private bodyFrame(streamId: number, length: number, endStream: boolean): void {
    if (endStream) {
      this.streamFinished(streamId); // the message is complete: grpc-js decodes and drops it
      return;
    }
    if (length === 0) return;
    if (this.unfinishedBodyBytes + length > this.maxUnfinishedBodyBytes) {
      throw new ClientLimitError(`more than ${this.maxUnfinishedBodyBytes} bytes of unfinished request messages on one connection`);
    }
    if (this.shared && this.shared.used + length > this.shared.limit) {
      throw new ClientLimitError(`more than ${this.shared.limit} bytes of unfinished request messages on all connections`);
    }
    this.unfinishedBodies.set(streamId, (this.unfinishedBodies.get(streamId) ?? 0) + length);
    this.unfinishedBodyBytes += length;
    if (this.shared) this.shared.used += length;
  }

  /** Bytes held while waiting for the rest of a frame (at most one frame of a header block). */
  get bufferedBytes(): number {
    return this.pending.length + (this.block?.bytes ?? 0);
  }

  /**
   * Feed client bytes; returns the bytes for nghttp2. Throws when the connection must be closed.
   * A chunk of whole frames that needs no rewriting comes back as itself, not in pieces: each
   * piece would be its own hand-over to nghttp2 (a JS → C++ call and a parse pass each).
   */
  push(chunk: Buffer): Buffer[] {
    if (this.passthrough) return [chunk];
    // Nothing held from earlier chunks: if this one is forwarded whole and unchanged, the
    // pieces below are exactly its bytes in order.
    const startsClean = this.pending.length === 0 && this.block === null && !this.reencoding;
    const out: Buffer[] = [];
    const q = this.pending;
    q.push(chunk);
    try {
      for (;;) {
        if (this.prefaceSeen < PREFACE.length) {
          const n = Math.min(PREFACE.length - this.prefaceSeen, q.length);
          if (n === 0) break;
          if (!q.peek(n).equals(PREFACE.subarray(this.prefaceSeen, this.prefaceSeen + n))) throw new FramingError('not an HTTP/2 connection preface');
          out.push(...q.takeViews(n));
          this.prefaceSeen += n;
          continue;
        }
        if (this.payloadToForward > 0) {
          if (q.length === 0) break;
          const views = q.takeViews(this.payloadToForward);
          for (const v of views) this.payloadToForward -= v.length;
          out.push(...views);
          continue;
        }
        if (q.length < FRAME_HEADER) break;
        // Parsed once per frame, not again on every chunk while the payload trickles in.
        if (!this.nextFrame) {
          const header = q.peek(FRAME_HEADER);
          this.nextFrame = { length: header.readUIntBE(0, 3), type: header[3]! };
        }
        const { length, type } = this.nextFrame;
        if (type !== TYPE_HEADERS && type !== TYPE_CONTINUATION) {
          if (this.block) throw new FramingError('frame interleaved inside a header block');
          const header = q.peek(FRAME_HEADER);
          const streamId = header.readUInt32BE(5) & 0x7fffffff;
          if (type === TYPE_DATA) this.bodyFrame(streamId, length, (header[4]! & FLAG_END_STREAM) !== 0);
          else if (type === TYPE_RST_STREAM) this.streamFinished(streamId);
          out.push(q.takeCopy(FRAME_HEADER));
          this.nextFrame = null;
          this.payloadToForward = length;
          continue;
        }
        if (length > ADVERTISED_MAX_FRAME_SIZE) throw new FramingError(`header frame of ${length} bytes exceeds SETTINGS_MAX_FRAME_SIZE`);
        if ((this.block?.bytes ?? 0) + FRAME_HEADER + length > MAX_HEADER_BLOCK_BYTES) throw new ClientLimitError(`header block larger than ${MAX_HEADER_BLOCK_BYTES} bytes`);
        if (q.length < FRAME_HEADER + length) break;
        const frame = q.takeCopy(FRAME_HEADER + length); // a copy of its own: kept across chunks
        this.nextFrame = null;
        const done = this.headerFrame(frame, type);
        if (done) out.push(...done);
      }
    } catch (err) {
      if (err instanceof FramingError || err instanceof HpackError) {
        if (this.reencoding) throw err;
        // Still in step with nghttp2: let it judge the raw bytes itself from here on.
        this.passthrough = true;
        if (this.block) out.push(...this.block.frames);
        this.block = null;
        out.push(...q.drain());
        return out;
      }
      throw err;
    }
    if (startsClean && !this.reencoding && q.length === 0 && this.block === null && out.length > 1) return [chunk];
    return out;
  }

  /** Handle one complete HEADERS or CONTINUATION frame; returns frames to forward once the block is complete. */
  private headerFrame(frame: Buffer, type: number): Buffer[] | null {
    const flags = frame[4]!;
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    let payload = frame.subarray(FRAME_HEADER);
    if (type === TYPE_HEADERS) {
      if (this.block) throw new FramingError('HEADERS inside an open header block');
      if (flags & FLAG_PADDED) {
        if (payload.length < 1) throw new FramingError('short padded HEADERS');
        const pad = payload[0]!;
        if (pad >= payload.length) throw new FramingError('HEADERS padding exceeds payload');
        payload = payload.subarray(1, payload.length - pad);
      }
      let priority: Buffer | null = null;
      if (flags & FLAG_PRIORITY) {
        if (payload.length < 5) throw new FramingError('short HEADERS priority');
        priority = payload.subarray(0, 5);
        payload = payload.subarray(5);
      }
      this.block = { streamId, endStream: (flags & FLAG_END_STREAM) !== 0, priority, frames: [frame], fragments: [payload], bytes: frame.length };
    } else {
      if (!this.block || this.block.streamId !== streamId) throw new FramingError('unexpected CONTINUATION');
      this.block.frames.push(frame);
      this.block.fragments.push(payload);
      this.block.bytes += frame.length;
    }
    if (!(flags & FLAG_END_HEADERS)) return null;
    const block = this.block!;
    if (block.endStream) this.streamFinished(block.streamId); // trailers, or a request without a body
    // Kept open until decoded: if decoding fails, its frames go to nghttp2 raw with the rest.
    const out = this.finishBlock(block);
    this.block = null;
    return out;
  }

  private finishBlock(block: OpenBlock): Buffer[] {
    const fields = this.decoder.decode(Buffer.concat(block.fragments));
    let changed = false;
    for (const f of fields) {
      if ((f.name === ':authority' || f.name === 'host') && !isValidAuthority(f.value)) {
        this.originalAuthority ??= f.value;
        f.value = REPLACEMENT_AUTHORITY;
        changed = true;
      }
    }
    if (changed) this.rewrites++;
    if (!changed && !this.reencoding) return block.frames;
    this.reencoding = true;
    return this.frame(block, encodeStateless(fields));
  }

  private frame(block: OpenBlock, encoded: Buffer): Buffer[] {
    const out: Buffer[] = [];
    const prio = block.priority;
    const firstRoom = MIN_MAX_FRAME_SIZE - (prio ? 5 : 0);
    let first = encoded.subarray(0, firstRoom);
    let rest = encoded.subarray(first.length);
    let flags = (block.endStream ? FLAG_END_STREAM : 0) | (prio ? FLAG_PRIORITY : 0) | (rest.length ? 0 : FLAG_END_HEADERS);
    out.push(frameHeader(first.length + (prio ? 5 : 0), TYPE_HEADERS, flags, block.streamId));
    if (prio) out.push(prio);
    out.push(first);
    while (rest.length) {
      first = rest.subarray(0, MIN_MAX_FRAME_SIZE);
      rest = rest.subarray(first.length);
      flags = rest.length ? 0 : FLAG_END_HEADERS;
      out.push(frameHeader(first.length, TYPE_CONTINUATION, flags, block.streamId), first);
    }
    return out;
  }
}

// ─────────────────────────────────────────────────────────────────────────────
// The socket front: what the server hands grpc-js instead of the accepted socket.

/**
 * Wraps an accepted socket in a Duplex for nghttp2: server → client bytes pass
 * unchanged, client → server bytes go through a ClientStreamRewriter.
 */
export function interpose(
  socket: net.Socket, limits: RewriterLimits, handshakeTimeoutMs: number, onRewrite: (original: string) => void, onFatal: (err: Error) => void,
): Duplex {
  const rewriter = new ClientStreamRewriter(limits);
  let handshakeTimer: NodeJS.Timeout | undefined = setTimeout(() => {
    onFatal(new ClientLimitError(`no HTTP/2 connection preface within ${handshakeTimeoutMs} ms`));
    socket.destroy();
    duplex.destroy();
  }, handshakeTimeoutMs);
  socket.once('close', () => {
    clearTimeout(handshakeTimer);
    rewriter.release();
  });
  let announced = false;
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      if (socket.destroyed) return cb();
      socket.write(chunk, () => cb());
    },
    // nghttp2 hands over all the frames it has ready at once (JSStreamSocket corks this
    // stream around them): they leave in one writev(2) rather than a write(2) each.
    writev(chunks, cb) {
      if (socket.destroyed) return cb();
      socket.cork();
      for (let i = 0; i < chunks.length - 1; i++) socket.write(chunks[i]!.chunk);
      socket.write(chunks[chunks.length - 1]!.chunk, () => cb());
      socket.uncork();
    },
    final(cb) {
      socket.end(() => cb());
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  socket.on('data', (chunk: Buffer) => {
    let out: Buffer[];
    try {
      out = rewriter.push(chunk);
    } catch (err) {
      onFatal(err as Error);
      socket.destroy();
      duplex.destroy();
      return;
    }
    if (handshakeTimer && rewriter.prefaceComplete) {
      clearTimeout(handshakeTimer);
      handshakeTimer = undefined;
    }
    if (!announced && rewriter.originalAuthority !== undefined) {
      announced = true;
      onRewrite(rewriter.originalAuthority);
    }
    let more = true;
    for (const b of out) if (b.length) more = duplex.push(b) && more;
    if (!more) socket.pause();
  });
  socket.on('end', () => duplex.push(null));
  socket.on('error', () => duplex.destroy());
  socket.on('close', () => duplex.destroy());
  return duplex;
}
