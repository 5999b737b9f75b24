// Corral's CRI gRPC server on a unix socket. Connections are accepted by Corral and
// handed to grpc-js through a Duplex that fixes path-form :authority headers
// (see http2-authority.ts for why and how).

import net from 'node:net';
import { chmod, link, lstat, mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log.js';
import { CorralError, resourceExhausted } from '../errors.js';
import { toGrpcStatus } from './errors.js';
import { ClientLimitError, RequestBodyBudget, interpose } from './http2-authority.js';
import {
  IMAGE_RPCS, IMAGE_SERVICE, RUNTIME_RPCS, RUNTIME_SERVICE, imageServiceDefinition, protoRoot, runtimeServiceDefinition,
  type ImageRpcName, type RuntimeRpcName,
} from './proto.js';
import { MAX_REQUEST_ELEMENTS, countWireElements } from './message-limits.js';
import type { CallInfo, ImageHandlers, RuntimeHandlers, RuntimeStreamHandlers } from './rpc-types.js';
import { serveStream, type StreamHandler } from './server-stream.js';

export type { ImageRpcName, RuntimeRpcName };

/** A handler as the server dispatches it, by RPC name over untyped grpc-js objects; the typed maps are RuntimeHandlers / ImageHandlers. */
export type Handler = (
  request: any,
  call: CallInfo,
) => Promise<any>;

export interface CriServerOptions {
  socketPath: string;
  /** Permission bits of the socket file; default 0o660. */
  socketMode?: number;
  runtimeHandlers: RuntimeHandlers;
  imageHandlers: ImageHandlers;
  /** The server-streaming RPCs served (GetContainerEvents); the others answer UNIMPLEMENTED. */
  runtimeStreamHandlers?: RuntimeStreamHandlers;
  logger: Logger;
  /** Time a new connection has to send the HTTP/2 connection preface; default DEFAULT_HANDSHAKE_TIMEOUT_MS. */
  handshakeTimeoutMs?: number;
  /** Connections served at once; more are closed on accept. Default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number;
  /** Told of every answered call: the RPC, its gRPC status name and how long it took (metrics). */
  onCall?: (method: string, code: string, seconds: number) => void;
}

/** A client that has not even sent the 24-byte HTTP/2 preface by then is not a CRI client. */
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Kubelet uses one or two connections; the cap keeps a flood of sockets from exhausting the daemon's file descriptors. */
const DEFAULT_MAX_CONNECTIONS = 1024;

/** Largest message Corral accepts or sends (containerd's default and kubelet's limit: 16 MiB). */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Request-body bytes of unfinished streams one connection may make grpc-js hold (two largest messages). */
const MAX_UNFINISHED_BODY_BYTES_PER_CONNECTION = 2 * MAX_MESSAGE_BYTES;
/** The same, over all connections together: the most memory partial requests can take. */
const MAX_UNFINISHED_BODY_BYTES_TOTAL = 8 * MAX_MESSAGE_BYTES;
/**
 * Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). gRPC
 * clients queue calls beyond it rather than fail; Node's default is unlimited.
 */
const MAX_CONCURRENT_STREAMS = 256;

/** RPCs the kubelet polls constantly; successful calls to these are logged at debug level. */
const QUIET_RPC = /^(Version|Status|List\w*|\w*Status|\w*Stats|ImageFsInfo|RuntimeConfig)$/;

// ─────────────────────────────────────────────────────────────────────────────
// The unix socket.

function probe(socketPath: string, timeoutMs = 1000): Promise<'listening' | 'dead'> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    const done = (r: 'listening' | 'dead') => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done('listening'), timeoutMs);
    s.once('connect', () => done('listening'));
    s.once('error', () => done('dead'));
  });
}

/** Make socketPath bindable: create the folder, remove a stale socket, refuse if a daemon answers there. */
async function prepareSocketPath(socketPath: string): Promise<void> {
  await mkdir(path.dirname(socketPath), { recursive: true });
  let st;
  try {
    st = await lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`corral: ${socketPath} exists and is not a socket; refusing to replace it`);
  if ((await probe(socketPath)) === 'listening') throw new Error(`another daemon is listening on ${socketPath}`);
  await rm(socketPath, { force: true });
}

/** Longest path a unix socket can be bound at (sun_path is 108 bytes, NUL included). */
const MAX_SOCKET_PATH_BYTES = 107;

/**
 * Listen on a unix socket at socketPath whose mode is `mode` from the moment the path
 * exists. bind(2) creates the file with 0777 & ~umask, so the socket is bound inside a
 * fresh private directory (0700, made by mkdtemp: nobody else can reach it there), given its
 * mode, and only then hard-linked to socketPath; link(2) fails rather than replacing a path
 * that appeared meanwhile. The process umask is not touched: it is process-wide, and libuv's
 * worker threads create files concurrently.
 */
async function listenWithMode(netServer: net.Server, socketPath: string, mode: number): Promise<void> {
  const privateDir = await mkdtemp(path.join(path.dirname(socketPath), '.corral-bind-'));
  const privatePath = path.join(privateDir, 's');
  let listening = false;
  try {
    if (Buffer.byteLength(privatePath) > MAX_SOCKET_PATH_BYTES) {
      throw new Error(`corral: socket directory ${path.dirname(socketPath)} is too long a path to bind a socket in (at most ${MAX_SOCKET_PATH_BYTES - 22} bytes)`);
    }
    await new Promise<void>((resolve, reject) => {
      netServer.once('error', reject);
      netServer.listen(privatePath, () => {
        netServer.off('error', reject);
        resolve();
      });
    });
    listening = true;
    await chmod(privatePath, mode);
    try {
      await link(privatePath, socketPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${socketPath} appeared while binding the socket; is another daemon starting?`);
      throw err;
    }
  } catch (err) {
    if (listening) netServer.close();
    throw err;
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
}

// ─────────────────────────────────────────────────────────────────────────────
// Requests too big to decode.

/** Stands in for a request that was not decoded because it has too many elements. */
class RefusedRequest {
  constructor(readonly reason: string) {}
}

/**
 * The service definition with request decoding guarded: a request with more than
 * MAX_REQUEST_ELEMENTS elements is not decoded (see message-limits.ts) and its call is
 * answered RESOURCE_EXHAUSTED by `unary` with the reason.
 */
function guardRequests(def: grpc.ServiceDefinition, serviceName: string): grpc.ServiceDefinition {
  const root = protoRoot();
  const service = root.lookupService(serviceName);
  const guarded: Record<string, grpc.MethodDefinition<any, any>> = {};
  for (const [name, method] of Object.entries(def)) {
    const type = root.lookupType(service.methods[name]!.requestType);
    guarded[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        if (countWireElements(type, bytes, MAX_REQUEST_ELEMENTS) > MAX_REQUEST_ELEMENTS) {
          return new RefusedRequest(`${name} request has more than ${MAX_REQUEST_ELEMENTS} fields (nested and repeated ones included); corral refuses requests that large`);
        }
        return method.requestDeserialize(bytes);
      },
    };
  }
  return guarded as grpc.ServiceDefinition;
}

// ─────────────────────────────────────────────────────────────────────────────
// The server.

export class CriServer {
  private inflight = 0;
  private closing = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly bodyBudget = new RequestBodyBudget(MAX_UNFINISHED_BODY_BYTES_TOTAL);
  private readonly idleWaiters = new Set<() => void>();
  /** One per open server stream: aborted at shutdown, which ends the stream. */
  private readonly streams = new Set<AbortController>();
  private shutdownPromise: Promise<void> | undefined;

  private constructor(
    private readonly opts: CriServerOptions,
    private readonly grpcServer: grpc.Server,
    private readonly netServer: net.Server,
    private readonly injector: ReturnType<grpc.Server['createConnectionInjector']>,
  ) {}

  /** Bind the socket and start serving. */
  static async start(opts: CriServerOptions): Promise<CriServer> {
    for (const name of Object.keys(opts.runtimeHandlers)) {
      if (!(RUNTIME_RPCS as readonly string[]).includes(name)) throw new Error(`corral: no RuntimeService RPC called ${name}`);
    }
    for (const name of Object.keys(opts.runtimeStreamHandlers ?? {})) {
      if (!runtimeServiceDefinition[name]?.responseStream) throw new Error(`corral: no server-streaming RuntimeService RPC called ${name}`);
    }
    for (const name of Object.keys(opts.imageHandlers)) {
      if (!(IMAGE_RPCS as readonly string[]).includes(name)) throw new Error(`corral: no ImageService RPC called ${name}`);
    }
    await prepareSocketPath(opts.socketPath);
    const grpcServer = new grpc.Server({
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
      // Channelz (gRPC's introspection service) is not served: its per-call and per-session
      // bookkeeping (counters, timestamps, a registry entry per connection) would be pure cost.
      'grpc.enable_channelz': 0,
    });
    const injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const netServer = net.createServer();
    netServer.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const server = new CriServer(opts, grpcServer, netServer, injector);
    grpcServer.addService(guardRequests(runtimeServiceDefinition, RUNTIME_SERVICE), server.implementation(runtimeServiceDefinition, opts.runtimeHandlers as Partial<Record<string, Handler>>, opts.runtimeStreamHandlers as Partial<Record<string, StreamHandler>>));
    grpcServer.addService(guardRequests(imageServiceDefinition, IMAGE_SERVICE), server.implementation(imageServiceDefinition, opts.imageHandlers as Partial<Record<string, Handler>>));
    netServer.on('connection', (socket) => server.accept(socket));
    try {
      await listenWithMode(netServer, opts.socketPath, opts.socketMode ?? 0o660);
    } catch (err) {
      injector.destroy();
      throw err;
    }
    netServer.on('error', (err) => opts.logger.error({ err: err.message }, 'cri socket error'));
    let lastDropLog = 0;
    netServer.on('drop', () => {
      if (Date.now() - lastDropLog < 10_000) return; // a flood must not flood the log too
      lastDropLog = Date.now();
      opts.logger.warn({ maxConnections: netServer.maxConnections }, 'cri connection refused: too many connections');
    });
    opts.logger.info({ socket: opts.socketPath }, 'cri server listening');
    return server;
  }

  /** Calls being handled right now. */
  inFlight(): number {
    return this.inflight;
  }

  /**
   * Stop accepting connections and calls, let in-flight calls finish for up to
   * graceMs, then close every connection. Idempotent.
   */
  shutdown(graceMs: number): Promise<void> {
    this.shutdownPromise ??= this.doShutdown(graceMs);
    return this.shutdownPromise;
  }

  private async doShutdown(graceMs: number): Promise<void> {
    this.closing = true;
    // Streams last as long as their client wants: ended now (UNAVAILABLE), not waited for.
    for (const s of this.streams) s.abort();
    const netClosed = new Promise<void>((resolve) => this.netServer.close(() => resolve()));
    // GOAWAY to every session: clients open no new streams; open ones may finish.
    this.injector.drain(graceMs);
    const deadline = Date.now() + Math.max(0, graceMs);
    while (this.inflight > 0 || this.sockets.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(finish, Math.min(left, 50));
        function finish() {
          clearTimeout(t);
          resolve();
        }
        this.idleWaiters.add(finish);
      });
      this.idleWaiters.clear();
    }
    if (this.inflight > 0) this.opts.logger.warn({ inFlight: this.inflight }, 'cri shutdown grace period over; cancelling calls');
    this.injector.destroy();
    this.grpcServer.forceShutdown();
    for (const s of this.sockets) s.destroy();
    await netClosed;
    await rm(this.opts.socketPath, { force: true }).catch(() => undefined);
    this.opts.logger.info({}, 'cri server stopped');
  }

  private wakeIdleWaiters(): void {
    for (const w of [...this.idleWaiters]) w();
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.wakeIdleWaiters();
    });
    socket.on('error', () => undefined);
    const log = this.opts.logger;
    const duplex = interpose(
      socket,
      { maxUnfinishedBodyBytes: MAX_UNFINISHED_BODY_BYTES_PER_CONNECTION, shared: this.bodyBudget },
      this.opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      (original) => log.debug({ authority: original }, 'cri client sent an invalid :authority; rewriting it to localhost'),
      (err) => log.warn({ err: err.message }, err instanceof ClientLimitError
        ? 'cri connection closed: the client went over a limit'
        : 'cri connection closed: cannot parse client HTTP/2 stream'),
    );
    try {
      this.injector.injectConnection(duplex);
    } catch (err) {
      // One connection failing to start must not take the listener (or the daemon) down.
      log.error({ err: (err as Error)?.message, stack: (err as Error)?.stack }, 'cri connection dropped: grpc-js refused it');
      duplex.destroy();
    }
  }

  private implementation(def: grpc.ServiceDefinition, handlers: Partial<Record<string, Handler>>, streamHandlers: Partial<Record<string, StreamHandler>> = {}): grpc.UntypedServiceImplementation {
    const impl: grpc.UntypedServiceImplementation = {};
    for (const [name, method] of Object.entries(def)) {
      const handler = handlers[name];
      if (method.requestStream) {
        // The CRI has no client-streaming RPCs; be defensive anyway.
        impl[name] = ((call: any, cb: any) => cb({ code: grpc.status.UNIMPLEMENTED, details: `corral does not serve ${name}` })) as any;
      } else if (method.responseStream && streamHandlers[name]) {
        const streamHandler = streamHandlers[name];
        impl[name] = ((call: grpc.ServerWritableStream<any, any>) => this.serverStream(name, streamHandler, call)) as any;
      } else if (method.responseStream) {
        impl[name] = ((call: grpc.ServerWritableStream<any, any>) => {
          this.logCall(name, call.request, grpc.status.UNIMPLEMENTED, 0);
          call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: `corral does not serve ${name} yet` } as any);
        }) as any;
      } else {
        impl[name] = ((call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) =>
          this.unary(name, handler, call, callback)) as any;
      }
    }
    return impl;
  }

  private unary(name: string, handler: Handler | undefined, call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>): void {
    const started = performance.now();
    const request = call.request;
    if (this.closing) {
      this.logCall(name, request, grpc.status.UNAVAILABLE, 0);
      callback({ code: grpc.status.UNAVAILABLE, details: 'corral is shutting down' });
      return;
    }
    if (request instanceof RefusedRequest) {
      this.logCall(name, undefined, grpc.status.RESOURCE_EXHAUSTED, 0, resourceExhausted(request.reason));
      callback({ code: grpc.status.RESOURCE_EXHAUSTED, details: request.reason });
      return;
    }
    if (!handler) {
      this.logCall(name, request, grpc.status.UNIMPLEMENTED, 0);
      callback({ code: grpc.status.UNIMPLEMENTED, details: `corral does not serve ${name} yet` });
      return;
    }
    this.inflight++;
    const d = call.getDeadline();
    const deadline = d instanceof Date ? d : Number.isFinite(d) ? new Date(d) : undefined;
    const ctx = {
      deadline,
      metadata: call.metadata,
      get cancelled() {
        return call.cancelled;
      },
    };
    let result: Promise<any>;
    try {
      result = Promise.resolve(handler(request, ctx));
    } catch (err) {
      result = Promise.reject(err);
    }
    // Every outcome answers the call exactly once, and nothing here can leave a rejection
    // unhandled: a failure while answering is logged and the call gets INTERNAL.
    let answered = false;
    const answer = (err: grpc.ServerErrorResponse | Partial<grpc.StatusObject> | null, response?: unknown) => {
      if (answered) return;
      answered = true;
      try {
        callback(err, response);
      } catch (e) {
        this.opts.logger.error({ method: name, err: (e as Error)?.message, stack: (e as Error)?.stack }, 'cri call: could not send the answer');
      }
    };
    result.then(
      (response) => {
        this.logCall(name, request, grpc.status.OK, performance.now() - started);
        answer(null, response ?? {});
      },
      (err) => {
        const { code, details } = toGrpcStatus(err);
        this.logCall(name, request, code, performance.now() - started, err);
        answer({ code, details });
      },
    ).catch((e: unknown) => {
      this.opts.logger.error({ method: name, err: (e as Error)?.message, stack: (e as Error)?.stack }, 'cri call: failure while answering');
      answer({ code: grpc.status.INTERNAL, details: `corral: internal error answering ${name}` });
    }).finally(() => {
      this.inflight--;
      if (this.inflight === 0) this.wakeIdleWaiters();
    });
  }

  /** A server-streaming call (see serveStream); not counted in inFlight, ended at shutdown. */
  private serverStream(name: string, handler: StreamHandler, call: grpc.ServerWritableStream<any, any>): void {
    const request = call.request;
    const refuse = (code: grpc.status, details: string, err?: unknown) => {
      this.logCall(name, request, code, 0, err);
      call.emit('error', { code, details } as any);
    };
    if (this.closing) return refuse(grpc.status.UNAVAILABLE, 'corral is shutting down');
    if (request instanceof RefusedRequest) return refuse(grpc.status.RESOURCE_EXHAUSTED, request.reason, resourceExhausted(request.reason));
    const over = new AbortController();
    this.streams.add(over);
    void serveStream(name, handler, call, over, {
      shuttingDown: () => this.closing,
      logCall: (code, ms, err) => this.logCall(name, request, code, ms, err),
      logger: this.opts.logger,
    }).finally(() => this.streams.delete(over));
  }

  private logCall(method: string, request: any, code: grpc.status, ms: number, err?: unknown): void {
    const entry: Record<string, unknown> = { method, code: grpc.status[code] ?? code, ms: Math.round(ms * 10) / 10 };
    this.opts.onCall?.(method, grpc.status[code] ?? String(code), ms / 1000);
    if (request && typeof request.podSandboxId === 'string' && request.podSandboxId) entry.podSandboxId = request.podSandboxId;
    if (request && typeof request.containerId === 'string' && request.containerId) entry.containerId = request.containerId;
    const log = this.opts.logger;
    if (code === grpc.status.OK) {
      if (QUIET_RPC.test(method)) log.debug(entry, 'cri call');
      else log.info(entry, 'cri call');
    } else if (code === grpc.status.UNKNOWN || code === grpc.status.INTERNAL) {
      if (err instanceof Error && !(err instanceof CorralError)) {
        // Not an answer a handler chose: an unexpected failure, logged with where it came from.
        entry.err = err.message;
        entry.stack = err.stack;
      }
      log.error(entry, 'cri call');
    } else {
      if (err instanceof Error) entry.err = err.message;
      log.warn(entry, 'cri call');
    }
  }
}
