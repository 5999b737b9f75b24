/**
 * Server-streaming calls (GetContainerEvents) under grpc-js: the handler sends through `send`,
 * which waits while the client's flow control holds messages back; the call ends when the
 * handler returns (OK), throws (its status), or the server shuts down (UNAVAILABLE).
 *
 * A client that stopped reading never takes the status (it queues behind the messages it did
 * not read): after a short grace its HTTP/2 stream is reset, so nothing of it stays in the daemon.
 */
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log.js';
import { toGrpcStatus } from './errors.js';
import type { ServerStream } from './rpc-types.js';

/** A server-streaming handler as the server dispatches it (typed: RuntimeStreamHandlers). */
export type StreamHandler = (request: any, stream: ServerStream<any>) => Promise<void>;

/** Once a stream's handler is done, the time its status has to reach the client before the stream is reset. */
const STREAM_STATUS_GRACE_MS = 1_000;

export interface StreamContext {
  /** True once the server shuts down: a handler ending then answers UNAVAILABLE. */
  shuttingDown(): boolean;
  logCall(code: grpc.status, ms: number, err?: unknown): void;
  logger: Logger;
}

/**
 * Runs `handler` for `call` until it is done; `over` is aborted when the call is over for the
 * server (the client cancelled or went, or the server aborts it at shutdown). Never rejects.
 */
export async function serveStream(name: string, handler: StreamHandler, call: grpc.ServerWritableStream<any, any>, over: AbortController, ctx: StreamContext): Promise<void> {
  const started = performance.now();
  const request = call.request;
  const clientGone = () => over.abort();
  call.once('cancelled', clientGone);
  call.once('close', clientGone);
  const callOver = () => over.signal.aborted || call.cancelled || call.writableEnded || call.destroyed;
  const send = (message: unknown) =>
    new Promise<void>((resolve, reject) => {
      if (callOver()) return reject(new Error(`${name}: the call is over`));
      if (call.write(message)) return resolve();
      const cleanup = () => {
        call.off('drain', onDrain);
        over.signal.removeEventListener('abort', onAbort);
      };
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(new Error(`${name}: the call is over`));
      };
      call.on('drain', onDrain);
      over.signal.addEventListener('abort', onAbort, { once: true });
    });
  const d = call.getDeadline();
  const stream: ServerStream<any> = {
    deadline: d instanceof Date ? d : Number.isFinite(d) ? new Date(d) : undefined,
    metadata: call.metadata,
    get cancelled() {
      return callOver();
    },
    signal: over.signal,
    send,
  };
  const finish = (status: { code: grpc.status; details: string } | null, err?: unknown) => {
    if (call.cancelled || call.destroyed || call.writableEnded) {
      ctx.logCall(grpc.status.CANCELLED, performance.now() - started);
      return;
    }
    ctx.logCall(status?.code ?? grpc.status.OK, performance.now() - started, err);
    if (status) call.emit('error', status as any);
    else call.end();
    const reset = setTimeout(() => {
      if (call.cancelled) return;
      if (!resetHttp2Stream(call)) ctx.logger.warn({ method: name }, 'cri stream: the client does not take the end of the stream and it cannot be reset');
    }, STREAM_STATUS_GRACE_MS);
    reset.unref();
    call.once('cancelled', () => clearTimeout(reset));
  };
  try {
    try {
      await handler(request, stream);
    } catch (err) {
      finish(toGrpcStatus(err), err);
      return;
    }
    finish(ctx.shuttingDown() ? { code: grpc.status.UNAVAILABLE, details: 'corral is shutting down' } : null);
  } catch (e) {
    ctx.logger.error({ method: name, err: (e as Error)?.message, stack: (e as Error)?.stack }, 'cri stream: failure while ending the call');
  } finally {
    over.abort();
  }
}

/**
 * Resets the HTTP/2 stream under a grpc-js server call (RST_STREAM CANCEL), for a client that
 * does not read: its unread messages and status are dropped. grpc-js keeps the stream as
 * `call.call.stream` (not public API, hence the checks); false when it is not there.
 */
function resetHttp2Stream(call: grpc.ServerWritableStream<any, any>): boolean {
  const h2 = (call as unknown as { call?: { stream?: unknown } }).call?.stream as http2.ServerHttp2Stream | undefined;
  if (!h2 || typeof h2.close !== 'function') return false;
  if (!h2.closed) h2.close(http2.constants.NGHTTP2_CANCEL);
  return true;
}
