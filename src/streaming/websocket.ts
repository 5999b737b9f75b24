/**
 * The streaming protocols over WebSocket (kubelet's wsstream, and the v5 stream-close of
 * the apiserver): every message is one channel byte then the payload (binary protocols),
 * or '0'+channel then base64 of the payload in a text frame (base64 protocols).
 * Exec/attach channels: 0 stdin, 1 stdout, 2 stderr, 3 error (status), 4 resize.
 * Port-forward: for the i-th requested port, 2i data and 2i+1 error; each starts with the
 * port as 2 little-endian bytes. v5 adds a client message `FF ch` that closes channel ch
 * (stdin EOF). Backpressure both ways: a lagging reader pauses the socket, and writes wait
 * for the socket to take them.
 */
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Logger } from '../util/log.js';
import type { StreamingRuntime, StreamIO } from './runtime.js';
import type { AttachRequest, ExecRequest, PortForwardRequest } from './token-cache.js';
import { resizeEvents } from './resize.js';
import { errorStreamPayload, runSession } from './status.js';

export const WS_REMOTE_COMMAND_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v4.base64.channel.k8s.io', 'channel.k8s.io', 'base64.channel.k8s.io'];
export const WS_PORT_FORWARD_PROTOCOLS = ['v4.channel.k8s.io', 'v4.base64.channel.k8s.io'];
/** The most one inbound message may carry. */
export const WS_MAX_PAYLOAD = 1024 * 1024;
/** Unsent bytes we let ws buffer before a writer waits. */
const MAX_BUFFERED = 1024 * 1024;
const STREAM_CLOSE = 0xff;

/** The subprotocol for an offer: '' when none offered (binary, v1 style), undefined when nothing fits. */
export function chooseWsProtocol(offered: string[], served: string[]): string | undefined {
  if (offered.length === 0) return '';
  return offered.find((p) => served.includes(p));
}

class WsChannel extends Duplex {
  readRequested = false;
  /** No more input will be delivered on this channel (later messages for it are dropped). */
  inputEnded = false;
  constructor(private readonly mux: ChannelMux, readonly ch: number) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
    this.on('error', () => undefined);
  }
  override _read(): void {
    this.readRequested = true;
    this.mux.unblock(this);
  }
  override _write(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.mux.send(this.ch, chunk).then(() => cb(), () => cb());
  }
  override _final(cb: () => void): void {
    cb(); // v4 has no per-channel close; the session's end closes them all
  }
  endInput(): void {
    if (this.inputEnded) return;
    this.inputEnded = true;
    this.push(null);
    this.mux.unblock(this);
  }
}

/** Demultiplexes one WebSocket into channels. */
export class ChannelMux {
  private readonly channels = new Map<number, WsChannel>();
  private readonly blocked = new Set<WsChannel>();
  private paused = false;
  closed = false;
  readonly base64: boolean;
  readonly v5: boolean;

  constructor(private readonly ws: WebSocket, protocol: string, private readonly logger: Logger) {
    this.base64 = protocol.includes('base64');
    this.v5 = protocol === 'v5.channel.k8s.io';
    ws.on('message', (data, isBinary) => this.onMessage(toBuffer(data), isBinary));
    ws.on('close', () => this.onClose());
    ws.on('error', () => this.onClose());
  }

  channel(ch: number): WsChannel {
    let c = this.channels.get(ch);
    if (!c) this.channels.set(ch, (c = new WsChannel(this, ch)));
    return c;
  }

  private onMessage(msg: Buffer, isBinary: boolean): void {
    let ch: number;
    let payload: Buffer;
    if (this.base64 && !isBinary) {
      if (msg.length === 0) return;
      ch = msg[0]! - 0x30;
      payload = Buffer.from(msg.subarray(1).toString('ascii'), 'base64');
    } else {
      if (msg.length === 0) return;
      ch = msg[0]!;
      payload = msg.subarray(1);
    }
    if (this.v5 && ch === STREAM_CLOSE) {
      if (payload.length !== 1) {
        this.logger.info('WebSocket v5: malformed stream-close message: closing');
        this.ws.close(1002, 'malformed stream close');
        return;
      }
      const c = this.channels.get(payload[0]!);
      if (c && !c.readableEnded) c.push(null);
      if (c) this.unblock(c); // nothing more can come for it: what it holds is bounded
      return;
    }
    const c = this.channels.get(ch);
    if (!c || payload.length === 0 || c.inputEnded) return; // a channel the request did not ask for (or ended): dropped
    // Node may call _read inside push(): only a read not yet asked for leaves the channel blocked.
    c.readRequested = false;
    if (!c.push(payload) && !c.readRequested) {
      this.blocked.add(c);
      this.updateFlow();
    }
  }

  unblock(c: WsChannel): void {
    if (this.blocked.delete(c)) this.updateFlow();
  }

  private updateFlow(): void {
    const stop = this.blocked.size > 0;
    if (stop && !this.paused) {
      this.paused = true;
      this.ws.pause();
    } else if (!stop && this.paused) {
      this.paused = false;
      this.ws.resume();
    }
  }

  /** Sends one message on a channel; resolves when ws can take more (or the socket is gone). */
  send(ch: number, payload: Buffer): Promise<void> {
    if (this.closed) return Promise.resolve();
    const msg = this.base64 ? Buffer.from(String.fromCharCode(0x30 + ch) + payload.toString('base64'), 'ascii') : Buffer.concat([Buffer.from([ch]), payload]);
    return new Promise((resolve) => {
      this.ws.send(msg, { binary: !this.base64 }, () => resolve());
      if (this.ws.bufferedAmount < MAX_BUFFERED) resolve();
    });
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.channels.values()) {
      if (!c.readableEnded) c.push(null);
    }
    this.blocked.clear();
  }
}

function toBuffer(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  return Buffer.from(data as ArrayBuffer);
}

/** Waits until ws has flushed what it holds, then closes normally. */
function closeWhenFlushed(ws: WebSocket): void {
  const close = () => ws.close(1000);
  if (ws.bufferedAmount === 0) return close();
  const t = setInterval(() => {
    if (ws.bufferedAmount === 0 || ws.readyState !== ws.OPEN) {
      clearInterval(t);
      close();
    }
  }, 20);
  t.unref();
}

export async function serveWsRemoteCommand(ws: WebSocket, protocol: string, req: ExecRequest | AttachRequest, runtime: StreamingRuntime, logger: Logger): Promise<void> {
  const mux = new ChannelMux(ws, protocol, logger);
  const gone = new AbortController();
  ws.once('close', () => gone.abort());
  const stdin = req.stdin ? mux.channel(0) : null;
  const stdout = req.stdout ? mux.channel(1) : null;
  const stderr = req.stderr && !req.tty ? mux.channel(2) : null;
  const resize = req.tty ? mux.channel(4) : null;
  // The empty message on the lowest writable channel tells the client the streams are ready.
  await mux.send(stdout ? 1 : stderr ? 2 : 3, Buffer.alloc(0));
  const io: StreamIO = { stdin, stdout, stderr, tty: req.tty, resize: resize ? resizeEvents(resize) : null, signal: gone.signal };
  const outcome = await runSession(runtime, req, io, logger);
  if (mux.closed) return;
  // Output still queued in the channels goes first, then the status.
  await Promise.all([stdout, stderr].map((c) => (c && !c.writableFinished ? new Promise<void>((r) => c.end(r)) : undefined)));
  const wire = protocol.startsWith('v4') || protocol.startsWith('v5') ? 'v4.channel.k8s.io' : 'channel.k8s.io';
  const payload = errorStreamPayload(outcome, wire);
  if (payload.length > 0) await mux.send(3, payload);
  stdin?.resume();
  closeWhenFlushed(ws);
}

export async function serveWsPortForward(ws: WebSocket, protocol: string, req: PortForwardRequest, runtime: StreamingRuntime, logger: Logger): Promise<void> {
  const mux = new ChannelMux(ws, protocol, logger);
  const gone = new AbortController();
  ws.once('close', () => gone.abort());
  if (req.ports.length === 0) {
    ws.close(1008, 'no ports to forward: the PortForward request named none');
    return;
  }
  const jobs = req.ports.map(async (port, i) => {
    const data = mux.channel(2 * i);
    const error = mux.channel(2 * i + 1);
    const le = Buffer.alloc(2);
    le.writeUInt16LE(port);
    await mux.send(2 * i, le);
    await mux.send(2 * i + 1, le);
    error.resume();
    // v4 has no per-channel close, so a client cannot end its side: the pod's end of the
    // connection ends it (as kubelet's runtimes return then), and the session can close.
    data.once('finish', () => data.endInput());
    try {
      await runtime.portForward(req.podSandboxId, port, data, gone.signal);
    } catch (e) {
      logger.info({ sandboxId: req.podSandboxId, port, err: (e as Error).message }, 'port-forward connection failed');
      await mux.send(2 * i + 1, Buffer.from(`error forwarding port ${port} to pod ${req.podSandboxId}, uid : ${(e as Error).message}`));
    } finally {
      data.resume();
    }
  });
  await Promise.all(jobs);
  if (!mux.closed) closeWhenFlushed(ws);
}
