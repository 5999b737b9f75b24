/**
 * Corral's streaming HTTP server (kubelet's cri/streaming server): the URLs the CRI Exec,
 * Attach and PortForward calls answer, `/exec/TOKEN`, `/attach/TOKEN`, `/portforward/TOKEN`.
 * A token is consumed by the request that presents it; a missing, used, expired or
 * wrong-kind token is a 404 before any upgrade. Upgrades to SPDY/3.1 with the protocol
 * negotiated by X-Stream-Protocol-Version (first client-offered one we serve).
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { promises as fs } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import type { StreamingRuntime } from './runtime.js';
import { TokenCache, type StreamRequest } from './token-cache.js';
import { SpdySession } from './spdy-session.js';
import { REMOTE_COMMAND_PROTOCOLS, serveRemoteCommand } from './remote-command.js';
import { PORT_FORWARD_PROTOCOLS, servePortForward } from './port-forward.js';
import { WebSocketServer, type WebSocket } from 'ws';
import { urlHost } from './listener.js';
import { WS_MAX_PAYLOAD, WS_PORT_FORWARD_PROTOCOLS, WS_REMOTE_COMMAND_PROTOCOLS, chooseWsProtocol, serveWsPortForward, serveWsRemoteCommand } from './websocket.js';

export interface StreamingServerOptions {
  address: string;
  /** 0 = an ephemeral port. */
  port: number;
  tlsCertFile: string;
  tlsKeyFile: string;
  /** A session with no frame either way for this long is closed; 0 = never. */
  idleTimeoutMs: number;
  runtime: StreamingRuntime;
  logger: Logger;
  tokens?: TokenCache;
  /** Streams one session may hold open (port-forward opens two per connection); default 1000. */
  maxStreamsPerSession?: number;
  /** How long a client has to open every stream its request implies (default 30 s, as kubelet). */
  streamCreationTimeoutMs?: number;
}

const ROUTE = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]{1,64})$/;

/** Header values split on commas (Node joins repeated headers with ", "), trimmed. */
export function headerList(v: string | string[] | undefined): string[] {
  const all = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return all.flatMap((x) => x.split(',')).map((x) => x.trim()).filter((x) => x !== '');
}

/** The first protocol the client offers that the server serves, as kubelet chooses. */
export function negotiateProtocol(offered: string[], served: string[]): string | undefined {
  return offered.find((p) => served.includes(p));
}

export class StreamingServer {
  readonly tokens: TokenCache;
  private readonly sessions = new Set<SpdySession>();
  private readonly websockets = new Set<WebSocket>();
  private baseUrl = '';

  private constructor(private readonly server: http.Server, private readonly opts: StreamingServerOptions) {
    this.tokens = opts.tokens ?? new TokenCache();
    server.on('request', (req, res) => this.onPlainRequest(req, res));
    server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    server.on('clientError', (_e, socket) => socket.destroy());
  }

  static async start(opts: StreamingServerOptions): Promise<StreamingServer> {
    const s = await StreamingServer.create({ ...opts, baseUrl: '' });
    const server = s.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.address, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as net.AddressInfo;
    s.baseUrl = `${server instanceof https.Server ? 'https' : 'http'}://${urlHost(a.address)}:${a.port}/`;
    opts.logger.info({ url: s.baseUrl }, 'streaming server listening');
    return s;
  }

  /**
   * A server that does not listen: a StreamingListener (listener.ts) bound the port, answers
   * URLs under baseUrl and hands each connection to accept().
   */
  static async create(opts: StreamingServerOptions & { baseUrl: string }): Promise<StreamingServer> {
    const useTls = opts.tlsCertFile !== '' || opts.tlsKeyFile !== '';
    const server = useTls
      ? https.createServer({ cert: await fs.readFile(opts.tlsCertFile), key: await fs.readFile(opts.tlsKeyFile) })
      : http.createServer();
    // Headers must come quickly; the upgraded sockets are the sessions' own business.
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    server.maxHeadersCount = 64;
    const s = new StreamingServer(server, opts);
    s.baseUrl = opts.baseUrl;
    return s;
  }

  /** Serves a connection accepted by someone else's listening socket (paused or not). */
  accept(socket: net.Socket): void {
    this.server.emit('connection', socket);
    socket.resume();
  }

  get url(): string {
    return this.baseUrl;
  }

  /** Caches the request under a fresh token and answers its one-time URL. */
  urlFor(request: StreamRequest): string {
    return `${this.baseUrl}${request.kind}/${this.tokens.insert(request)}`;
  }

  /** Stops listening and ends every live session. */
  async shutdown(): Promise<void> {
    for (const s of this.sessions) s.destroy('the daemon is shutting down');
    for (const ws of this.websockets) ws.terminate();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections(); // half-sent requests too: nothing may hold the shutdown
    await closed;
  }

  private route(url: string | undefined): StreamRequest | undefined {
    const m = ROUTE.exec((url ?? '').split('?')[0]!);
    if (!m) return undefined;
    const request = this.tokens.consume(m[2]!);
    return request?.kind === m[1] ? request : undefined;
  }

  private onPlainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const request = this.route(req.url);
    if (!request) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
      return;
    }
    res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8' }).end('unable to upgrade: missing upgrade headers in request\n');
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const request = this.route(req.url);
    if (!request) return plainResponse(socket, 404, 'Not Found', '404 page not found\n');
    if ((req.headers.upgrade ?? '').toLowerCase() === 'websocket') return this.upgradeWebSocket(req, socket, head, request);
    const served = request.kind === 'portforward' ? PORT_FORWARD_PROTOCOLS : REMOTE_COMMAND_PROTOCOLS;
    const offered = headerList(req.headers['x-stream-protocol-version']);
    if (offered.length === 0) return plainResponse(socket, 400, 'Bad Request', 'unable to upgrade: unable to negotiate protocol: client did not request protocol negotiation\n');
    const protocol = negotiateProtocol(offered, served);
    if (!protocol) {
      const accepted = served.map((p) => `X-Accepted-Stream-Protocol-Versions: ${p}\r\n`).join('');
      return plainResponse(socket, 403, 'Forbidden', `unable to upgrade: unable to negotiate protocol: client supports ${JSON.stringify(offered)}, server accepts ${JSON.stringify(served)}\n`, accepted);
    }
    if (!(req.headers.connection ?? '').toLowerCase().includes('upgrade') || !(req.headers.upgrade ?? '').toLowerCase().includes('spdy/3.1')) {
      return plainResponse(socket, 400, 'Bad Request', 'unable to upgrade: missing upgrade headers in request\n');
    }
    // Nothing may follow the 101 until the client's first frame: the Go client would lose it.
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: ${protocol}\r\n\r\n`);
    (socket as net.Socket).setNoDelay?.(true);
    const { logger, runtime } = this.opts;
    const session = new SpdySession(socket, { idleTimeoutMs: this.opts.idleTimeoutMs, logger, maxStreams: this.opts.maxStreamsPerSession ?? 1000 });
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    const served$ =
      request.kind === 'portforward'
        ? servePortForward(session, request, runtime, logger)
        : serveRemoteCommand(session, protocol, request, runtime, logger, this.opts.streamCreationTimeoutMs);
    served$.catch((e) => {
      logger.error({ err: (e as Error).message, kind: request.kind }, 'streaming session failed');
      session.destroy('session failed');
    });
    session.feed(head);
  }

  private upgradeWebSocket(req: http.IncomingMessage, socket: Duplex, head: Buffer, request: StreamRequest): void {
    const served = request.kind === 'portforward' ? WS_PORT_FORWARD_PROTOCOLS : WS_REMOTE_COMMAND_PROTOCOLS;
    const protocol = chooseWsProtocol(headerList(req.headers['sec-websocket-protocol']), served);
    if (protocol === undefined) return plainResponse(socket, 403, 'Forbidden', `unable to upgrade: no WebSocket subprotocol in common; server accepts ${JSON.stringify(served)}\n`);
    const { logger, runtime, idleTimeoutMs } = this.opts;
    const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD, perMessageDeflate: false, clientTracking: false, handleProtocols: () => protocol || false });
    wss.handleUpgrade(req, socket, head, (ws) => {
      this.websockets.add(ws);
      ws.once('close', () => this.websockets.delete(ws));
      if (idleTimeoutMs > 0) {
        const idle = setTimeout(() => ws.terminate(), idleTimeoutMs);
        idle.unref();
        const touch = () => idle.refresh();
        ws.on('message', touch);
        ws.on('ping', touch);
        ws.once('close', () => clearTimeout(idle));
      }
      const served$ = request.kind === 'portforward' ? serveWsPortForward(ws, protocol, request, runtime, logger) : serveWsRemoteCommand(ws, protocol, request, runtime, logger);
      served$.catch((e) => {
        logger.error({ err: (e as Error).message, kind: request.kind }, 'WebSocket streaming session failed');
        ws.terminate();
      });
    });
  }
}

function plainResponse(socket: Duplex, code: number, text: string, body: string, extraHeaders = ''): void {
  socket.end(`HTTP/1.1 ${code} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extraHeaders}Connection: close\r\n\r\n${body}`);
}

