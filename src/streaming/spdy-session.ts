/**
 * A server-side SPDY/3.1 session over an upgraded socket, as the Go client (moby/spdystream,
 * used by client-go, crictl, kubelet's proxy) speaks it:
 * - one zlib context per direction for the whole connection, every received header block
 *   inflated in order (even for frames we ignore) and every sent one Z_SYNC_FLUSHed;
 * - no SPDY send window: spdystream never sends WINDOW_UPDATE, so a server that enforced
 *   the 64 KiB initial window would stall; flow control is TCP backpressure both ways
 *   (a stream whose reader lags pauses the socket; a full socket pauses the writers);
 * - PINGs echoed, GOAWAY honoured, RST_STREAM ends both directions of a stream;
 * - bounded: frame sizes, header blocks, open streams, queued frames and unsent bytes are
 *   capped, and a protocol violation ends the connection (GOAWAY PROTOCOL_ERROR).
 */
import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import zlib from 'node:zlib';
import type { Logger } from '../util/log.js';
import { SPDY3_DICTIONARY } from './spdy-dictionary.js';
import {
  DATA_CHUNK,
  DEFAULT_FRAME_LIMITS,
  FrameParser,
  GoawayStatus,
  RstStatus,
  SpdyProtocolError,
  decodeHeaderBlock,
  encodeDataHeader,
  encodeGoaway,
  encodeHeaderBlock,
  encodePing,
  encodeRstStream,
  encodeSynReply,
  type Frame,
  type FrameLimits,
} from './spdy-frames.js';

export interface SpdySessionOptions {
  frameLimits?: FrameLimits;
  /** Streams open at once; more are refused (REFUSED_STREAM). */
  maxStreams?: number;
  /** No frame either way for this long ends the session; 0 = never. */
  idleTimeoutMs?: number;
  /** Decompressed header block cap (a deflate bomb stops here). */
  maxHeaderBytes?: number;
  logger?: Logger;
}

/** Frames parsed but not yet handled before the socket is paused (× the frame cap bounds what a session buffers). */
const MAX_QUEUED_FRAMES = 16;
/** Unsent bytes buffered on the socket before we stop reading from it (pings, RSTs a client provokes). */
const MAX_UNSENT_BYTES = 1024 * 1024;
/** After our GOAWAY and FIN, how long the peer gets to close before the socket is destroyed. */
const CLOSE_LINGER_MS = 5000;

export class SpdySession extends EventEmitter {
  readonly streams = new Map<number, SpdyStream>();
  private readonly parser: FrameParser;
  private readonly inflater = zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
  private readonly deflater = zlib.createDeflate({ level: 9, dictionary: SPDY3_DICTIONARY });
  private inbound: Promise<void> = Promise.resolve();
  private headerOut: Promise<unknown> = Promise.resolve();
  private queued = 0;
  private readonly blocked = new Set<SpdyStream>();
  private paused = false;
  private lastStreamId = 0;
  private goawayReceived = false;
  private goawaySent = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private zlibError: Error | undefined;
  closed = false;
  private readonly maxStreams: number;
  private readonly idleTimeoutMs: number;
  private readonly maxHeaderBytes: number;
  private readonly logger: Logger | undefined;

  constructor(readonly socket: Duplex, opts: SpdySessionOptions = {}) {
    super();
    this.parser = new FrameParser(opts.frameLimits ?? DEFAULT_FRAME_LIMITS);
    this.maxStreams = opts.maxStreams ?? 1000;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 0;
    this.maxHeaderBytes = opts.maxHeaderBytes ?? 64 * 1024;
    this.logger = opts.logger;
    const onZlibError = (e: Error) => {
      this.zlibError = e;
    };
    this.inflater.on('error', onZlibError);
    this.deflater.on('error', onZlibError);
    socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('end', () => {
      // The client's FIN: the upgraded socket is half-open (allowHalfOpen), so close our side too.
      this.terminate('the client closed the connection');
      socket.end();
    });
    socket.on('close', () => this.terminate('the connection closed'));
    socket.on('error', (e) => this.terminate(`connection error: ${e.message}`));
    socket.on('drain', () => this.updateFlow());
    this.touch();
  }

  /** Feeds bytes read before the session took the socket (the upgrade's `head`). */
  feed(head: Buffer): void {
    if (head.length > 0) this.onBytes(head);
  }

  // ------------------------------------------------------------------ inbound

  private onBytes(chunk: Buffer): void {
    if (this.closed) return;
    this.touch();
    let frames: Frame[];
    try {
      frames = this.parser.push(chunk);
    } catch (e) {
      this.protocolError(e as Error);
      return;
    }
    for (const f of frames) {
      this.queued++;
      this.inbound = this.inbound.then(async () => {
        this.queued--;
        if (this.closed) return;
        try {
          await this.handleFrame(f);
        } catch (e) {
          this.protocolError(e as Error);
        }
        this.updateFlow();
      });
    }
    this.updateFlow();
  }

  private async handleFrame(f: Frame): Promise<void> {
    switch (f.kind) {
      case 'syn_stream': {
        const headers = decodeHeaderBlock(await this.inflate(f.headerBlock), { maxCount: 64, maxBytes: this.maxHeaderBytes });
        if (this.closed) return;
        if (f.streamId % 2 === 0 || f.streamId <= this.lastStreamId) {
          this.send(encodeRstStream(f.streamId, RstStatus.PROTOCOL_ERROR));
          return;
        }
        this.lastStreamId = f.streamId;
        if (this.goawayReceived || this.goawaySent || this.streams.size >= this.maxStreams) {
          this.send(encodeRstStream(f.streamId, RstStatus.REFUSED_STREAM));
          return;
        }
        const stream = new SpdyStream(this, f.streamId, headers);
        this.streams.set(f.streamId, stream);
        if (f.fin) stream.receiveFin();
        this.emit('stream', stream);
        return;
      }
      case 'syn_reply':
      case 'headers':
        // Clients never send these to a server; still inflated to keep the context in step.
        await this.inflate(f.headerBlock);
        return;
      case 'data': {
        const s = this.streams.get(f.streamId);
        if (!s) return; // a stream we reset or refused: its late data is dropped
        s.receiveData(f.payload);
        if (f.fin) s.receiveFin();
        return;
      }
      case 'rst_stream':
        this.streams.get(f.streamId)?.receiveReset(f.status);
        return;
      case 'ping':
        if (f.id % 2 === 1) this.send(encodePing(f.id)); // ours would be even; we send none
        return;
      case 'goaway':
        this.goawayReceived = true;
        this.emit('goaway');
        return;
      case 'settings':
      case 'window_update':
        return; // no send window (see the header comment)
    }
  }

  /** Inflates one header block with the session's inflater: all of it, or the connection fails. */
  private inflate(block: Buffer): Promise<Buffer> {
    if (this.zlibError) return Promise.reject(new SpdyProtocolError(`header compression failed: ${this.zlibError.message}`));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let failed = false;
      const onData = (c: Buffer) => {
        size += c.length;
        if (size > this.maxHeaderBytes) failed = true;
        else chunks.push(c);
      };
      // A corrupt block errors the inflater, which then never calls the flush callback.
      const onError = (e: Error) => {
        this.inflater.off('data', onData);
        reject(new SpdyProtocolError(`bad header block: ${e.message}`));
      };
      this.inflater.on('data', onData);
      this.inflater.once('error', onError);
      this.inflater.write(block);
      this.inflater.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        this.inflater.off('data', onData);
        this.inflater.off('error', onError);
        if (this.zlibError) reject(new SpdyProtocolError(`bad header block: ${this.zlibError.message}`));
        else if (failed) reject(new SpdyProtocolError(`decompressed header block exceeds ${this.maxHeaderBytes} bytes`));
        else resolve(Buffer.concat(chunks));
      });
    });
  }

  private deflate(block: Buffer): Promise<Buffer> {
    const run = () =>
      new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const onData = (c: Buffer) => chunks.push(c);
        this.deflater.on('data', onData);
        this.deflater.write(block);
        this.deflater.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          this.deflater.off('data', onData);
          if (this.zlibError) reject(this.zlibError);
          else resolve(Buffer.concat(chunks));
        });
      });
    const p = this.headerOut.then(run, run);
    this.headerOut = p.catch(() => undefined);
    return p;
  }

  // ------------------------------------------------------------------ flow

  /** Reading from the socket stops while a stream's reader lags, frames pile up, or unsent bytes do. */
  updateFlow(): void {
    if (this.closed) return;
    const stop = this.blocked.size > 0 || this.queued > MAX_QUEUED_FRAMES || this.socket.writableLength > MAX_UNSENT_BYTES;
    if (stop && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!stop && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  block(s: SpdyStream): void {
    this.blocked.add(s);
    this.updateFlow();
  }

  unblock(s: SpdyStream): void {
    if (this.blocked.delete(s)) this.updateFlow();
  }

  // ------------------------------------------------------------------ outbound

  /**
   * Writes a frame given as one or more buffers (a header and a payload: corked into one
   * writev, the payload not copied); false when the socket's buffer is full (wait for drained()).
   */
  send(...parts: Buffer[]): boolean {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return true;
    this.touch();
    const nonEmpty = parts.filter((p) => p.length > 0);
    if (nonEmpty.length <= 1) return this.socket.write(nonEmpty[0] ?? parts[0]!);
    this.socket.cork();
    let room = true;
    for (const p of nonEmpty) room = this.socket.write(p);
    this.socket.uncork();
    return room;
  }

  /** A DATA frame: its header and the payload itself (up to DATA_CHUNK of what a helper's pipe gave). */
  sendData(streamId: number, payload: Buffer, fin: boolean): boolean {
    return this.send(encodeDataHeader(streamId, payload.length, fin), payload);
  }

  /** Resolves when the socket can take more (or is gone). */
  drained(): Promise<void> {
    if (this.closed || this.socket.writableLength === 0 || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.on('close', done);
    });
  }

  /** SYN_REPLY (empty header block, as kubelet sends) accepting a client stream. */
  async reply(streamId: number): Promise<void> {
    const block = await this.deflate(encodeHeaderBlock({}));
    this.send(encodeSynReply(streamId, block));
  }

  streamDone(s: SpdyStream): void {
    this.streams.delete(s.id);
    this.blocked.delete(s);
    this.updateFlow();
    if (this.streams.size === 0) this.emit('idle');
  }

  // ------------------------------------------------------------------ ending

  /**
   * Graceful end: resets streams we have not finished, GOAWAY, our FIN; the socket is
   * destroyed when the peer closes or after a short linger.
   */
  close(): void {
    if (this.closed) return;
    for (const s of [...this.streams.values()]) if (!s.localFinished) s.reset(RstStatus.CANCEL);
    this.sendGoaway(GoawayStatus.OK);
    const sock = this.socket;
    sock.end();
    const linger = setTimeout(() => sock.destroy(), CLOSE_LINGER_MS);
    linger.unref();
    sock.once('close', () => clearTimeout(linger));
    sock.resume(); // read and drop until the peer's FIN
    this.terminate('closed by the server');
  }

  /** Ends at once (daemon shutdown, idle timeout). */
  destroy(reason = 'destroyed'): void {
    this.sendGoaway(GoawayStatus.OK);
    this.terminate(reason);
    this.socket.destroy();
  }

  private sendGoaway(status: number): void {
    if (this.goawaySent || this.closed) return;
    this.goawaySent = true;
    this.send(encodeGoaway(this.lastStreamId, status));
  }

  private protocolError(e: Error): void {
    if (this.closed) return;
    this.logger?.warn({ err: e.message }, 'SPDY protocol error: closing the streaming connection');
    this.sendGoaway(GoawayStatus.PROTOCOL_ERROR);
    this.terminate(`protocol error: ${e.message}`);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** The session is over: every stream ends, waiters wake, 'close' fires once. */
  private terminate(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    for (const s of [...this.streams.values()]) s.receiveReset(RstStatus.CANCEL);
    this.streams.clear();
    this.blocked.clear();
    this.inflater.destroy();
    this.deflater.destroy();
    this.emit('close', reason);
  }

  private touch(): void {
    if (this.idleTimeoutMs <= 0 || this.closed) return;
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => {
        this.logger?.info({ idleMs: this.idleTimeoutMs }, 'streaming connection idle: closing it');
        this.destroy('idle timeout');
      }, this.idleTimeoutMs);
      this.idleTimer.unref();
    }
  }
}

/**
 * What a stream buffers of a payload: the payload itself (a view of the socket read it came
 * in, no copy), or a copy when it is a small part of that read. A stream's buffer is bounded
 * by the bytes it counts, but a view keeps its whole read alive: a client could otherwise
 * make a stream nobody reads hold thousands of reads of ~64 KiB through 1-byte frames, each
 * cut from a read that is otherwise another stream's (so memory ≤ 8x what streams count).
 */
export function keptPayload(payload: Buffer): Buffer {
  if (payload.length * 8 >= payload.buffer.byteLength) return payload;
  // A buffer of its own (not a slice of Node's shared pool, which would pin a pool slab instead).
  const own = Buffer.allocUnsafeSlow(payload.length);
  payload.copy(own);
  return own;
}

/**
 * One client-initiated stream. Readable: the client's DATA until its FIN (or a reset);
 * writable: our DATA, sent in 32 KiB frames after the SYN_REPLY, end() = FIN. Writes after
 * a reset are dropped (the session's abort tells the producer to stop).
 */
export class SpdyStream extends Duplex {
  private replied: Promise<void> | undefined;
  remoteFinished = false;
  localFinished = false;
  wasReset = false;
  private readRequested = false;

  constructor(private readonly session: SpdySession, readonly id: number, readonly headers: Map<string, string>) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
    this.on('error', () => undefined); // errors surface through 'reset' and the session
  }

  /** Accepts the stream (SYN_REPLY); data may be written only after it. */
  accept(): Promise<void> {
    this.replied ??= this.session.reply(this.id);
    return this.replied;
  }

  /** RST_STREAM: ends both directions. */
  reset(status: number = RstStatus.CANCEL): void {
    if (this.wasReset) return;
    // An RST overtaking our SYN_REPLY (still being deflated) would fail the client's CreateStream.
    const rst = encodeRstStream(this.id, status);
    if (this.replied) void this.replied.then(() => this.session.send(rst), () => undefined);
    else this.session.send(rst);
    this.receiveReset(status);
  }

  /** Reads and discards whatever the client still sends on this stream. */
  discard(): void {
    this.resume();
  }

  receiveData(payload: Buffer): void {
    if (this.remoteFinished || this.wasReset) return;
    if (payload.length === 0) return;
    // Node may call _read inside push(): only a read not yet asked for leaves the stream blocked.
    this.readRequested = false;
    if (!this.push(keptPayload(payload)) && !this.readRequested) this.session.block(this);
  }

  receiveFin(): void {
    if (this.remoteFinished) return;
    this.remoteFinished = true;
    this.push(null);
    this.session.unblock(this); // nothing more can come for it: what it holds is bounded
    this.maybeDone();
  }

  receiveReset(status: number): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.localFinished = true;
    if (!this.remoteFinished) {
      this.remoteFinished = true;
      this.push(null);
    }
    this.session.unblock(this);
    this.emit('reset', status);
    this.maybeDone();
  }

  private maybeDone(): void {
    if (this.remoteFinished && this.localFinished) this.session.streamDone(this);
  }

  override _read(): void {
    this.readRequested = true;
    this.session.unblock(this);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.writeData(chunk, false).then(() => cb(), cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.writeData(Buffer.alloc(0), true).then(() => cb(), cb);
  }

  private async writeData(chunk: Buffer, fin: boolean): Promise<void> {
    await this.accept();
    for (let o = 0; o < chunk.length || (fin && o === 0); o += DATA_CHUNK) {
      if (this.wasReset || this.localFinished) return;
      const part = chunk.subarray(o, o + DATA_CHUNK);
      const last = o + DATA_CHUNK >= chunk.length;
      if (fin && last) this.localFinished = true;
      if (!this.session.sendData(this.id, part, fin && last)) await this.session.drained();
      if (fin && last) break;
    }
    if (fin) this.maybeDone();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.session.unblock(this);
    cb(err);
  }
}
