/**
 * A minimal SPDY/3.1 client for tests, shaped like the Go client (spdystream): upgrades
 * with POST, opens odd-numbered streams with compressed `streamtype`/`port`/`requestid`
 * headers, never sends WINDOW_UPDATE, and records every frame the server sends.
 */
import http from 'node:http';
import zlib from 'node:zlib';
import type { Socket } from 'node:net';
import { SPDY3_DICTIONARY } from '../../src/streaming/spdy-dictionary.js';
import { FrameParser, FrameType, encodeData, encodeGoaway, encodeHeaderBlock, encodeRstStream, type Frame } from '../../src/streaming/spdy-frames.js';

export interface ClientStream {
  id: number;
  replied: boolean;
  data: Buffer[];
  fin: boolean;
  reset: number | undefined;
}

export class TestSpdyClient {
  readonly frames: Frame[] = [];
  readonly streams = new Map<number, ClientStream>();
  private readonly parser = new FrameParser({ maxControlLength: 1 << 20, maxDataLength: 1 << 24 });
  private readonly deflater = zlib.createDeflate({ level: 9, dictionary: SPDY3_DICTIONARY });
  private nextId = 1;
  private waiters: Array<() => void> = [];
  closed = false;
  /** Bytes that came with the 101 response (the server must send none). */
  headBytes = 0;

  private constructor(readonly socket: Socket, readonly protocol: string | undefined) {
    socket.on('data', (c: Buffer) => {
      for (const f of this.parser.push(c)) this.onFrame(f);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(url: string, protocols: string[]): Promise<TestSpdyClient> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | string[]> = { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': protocols };
      const req = http.request(url, { method: 'POST', headers });
      req.on('upgrade', (res, socket, head) => {
        const c = new TestSpdyClient(socket, res.headers['x-stream-protocol-version'] as string | undefined);
        c.headBytes = head.length;
        resolve(c);
      });
      req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
      req.on('error', reject);
      req.end();
    });
  }

  private onFrame(f: Frame): void {
    this.frames.push(f);
    const s = 'streamId' in f ? this.streams.get(f.streamId) : undefined;
    if (f.kind === 'syn_reply' && s) s.replied = true;
    if (f.kind === 'data' && s) {
      if (f.payload.length > 0) s.data.push(f.payload);
      if (f.fin) s.fin = true;
    }
    if (f.kind === 'rst_stream' && s) s.reset = f.status;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Resolves once cond() holds (checked after every frame), or rejects after timeoutMs. */
  until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else if (this.closed && !cond()) {
          clearTimeout(timer);
          reject(new Error(`connection closed before ${what}`));
        } else this.waiters.push(check);
      };
      check();
    });
  }

  async compress(headers: Record<string, string>): Promise<Buffer> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      const on = (c: Buffer) => chunks.push(c);
      this.deflater.on('data', on);
      this.deflater.write(encodeHeaderBlock(headers));
      this.deflater.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        this.deflater.off('data', on);
        resolve(Buffer.concat(chunks));
      });
    });
  }

  /** SYN_STREAM; waits for the SYN_REPLY like spdystream's CreateStream (unless told not to). */
  async open(headers: Record<string, string>, opts: { fin?: boolean; wait?: boolean } = {}): Promise<ClientStream> {
    const id = this.nextId;
    this.nextId += 2;
    const s: ClientStream = { id, replied: false, data: [], fin: false, reset: undefined };
    this.streams.set(id, s);
    const block = await this.compress(headers);
    const body = Buffer.alloc(10);
    body.writeUInt32BE(id, 0);
    this.sendControl(FrameType.SYN_STREAM, opts.fin ? 1 : 0, Buffer.concat([body, block]));
    if (opts.wait !== false) await this.until(() => s.replied || s.reset !== undefined, 10_000, `reply to stream ${id}`);
    return s;
  }

  sendControl(type: number, flags: number, body: Buffer): void {
    const head = Buffer.alloc(8);
    head.writeUInt16BE(0x8003, 0);
    head.writeUInt16BE(type, 2);
    head.writeUInt32BE(body.length, 4);
    head[4] = flags;
    this.socket.write(Buffer.concat([head, body]));
  }

  write(s: ClientStream, data: Buffer | string, fin = false): void {
    this.socket.write(encodeData(s.id, Buffer.from(data), fin));
  }

  rst(s: ClientStream, status = 5): void {
    this.socket.write(encodeRstStream(s.id, status));
  }

  /** What client-go does at the end: RST what it did not finish, GOAWAY, FIN. */
  close(): void {
    for (const s of this.streams.values()) if (!s.reset) this.socket.write(encodeRstStream(s.id, 5));
    this.socket.end(encodeGoaway(0, 0));
  }

  text(s: ClientStream): string {
    return Buffer.concat(s.data).toString();
  }
}
