/**
 * The Prometheus endpoint: GET (or HEAD) /metrics on metrics_address, nothing else. Bounded:
 * no request body is read (one is refused), headers and whole requests have deadlines, idle
 * connections are closed, connections are capped, and concurrent scrapes share one
 * rendering (CorralMetrics.render).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../util/log.js';
import type { CorralMetrics } from './registry.js';

export const METRICS_PATH = '/metrics';
/** Prometheus scrapes with one connection per target; a few more for people with curl. */
const MAX_CONNECTIONS = 16;
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** A connection that sends nothing for this long is closed. */
const IDLE_SOCKET_TIMEOUT_MS = 30_000;
const MAX_HEADER_BYTES = 8 * 1024;

export class MetricsServer {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: http.Server,
    /** Where it listens, e.g. "127.0.0.1:9090" (the port chosen when metrics_address asked for 0). */
    readonly address: string,
    private readonly logger: Logger,
  ) {}

  /** Listens on host:port; a bind failure rejects with what to do about it. */
  static async start(opts: { host: string; port: number; metrics: CorralMetrics; logger: Logger }): Promise<MetricsServer> {
    const { host, port, metrics, logger } = opts;
    const server = http.createServer(
      {
        headersTimeout: HEADERS_TIMEOUT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
        // How often those two deadlines are checked (Node's default, 30 s, would let a slow client hold a connection that long).
        connectionsCheckingInterval: 1_000,
        keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
        maxHeaderSize: MAX_HEADER_BYTES,
      },
      (req, res) => serve(req, res, metrics, logger),
    );
    server.maxConnections = MAX_CONNECTIONS;
    server.setTimeout(IDLE_SOCKET_TIMEOUT_MS, (socket) => socket.destroy());
    const wanted = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      server.close();
      throw new Error(`metrics_address ${wanted}: ${bindFailure(e as NodeJS.ErrnoException, host)}`);
    }
    server.on('error', (err) => logger.error({ err: err.message }, 'metrics server error'));
    // Malformed or over-limit requests (headers too large, too slow) get Node's own answer
    // (400, 431, 408) and the connection is closed: never fatal.
    const a = server.address() as AddressInfo;
    const address = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    logger.info({ address, url: `http://${address}${METRICS_PATH}` }, 'metrics server listening');
    return new MetricsServer(server, address, logger);
  }

  /** Stops listening and closes every connection (a scrape being answered is cut). Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    }).then(() => this.logger.info({ address: this.address }, 'metrics server stopped'));
    return this.closing;
  }
}

function bindFailure(e: NodeJS.ErrnoException, host: string): string {
  switch (e.code) {
    case 'EADDRINUSE':
      return 'the address is already in use (another process, or another Corral, listens there); choose another port in metrics_address or stop that process';
    case 'EADDRNOTAVAIL':
      return `${host} is not an address of this host; use one of its addresses (127.0.0.1 for local scrapes only, 0.0.0.0 for all)`;
    case 'EACCES':
      return 'permission denied: ports below 1024 need root (or CAP_NET_BIND_SERVICE); choose a higher port';
    default:
      return `cannot listen: ${e.message}`;
  }
}

function serve(req: http.IncomingMessage, res: http.ServerResponse, metrics: CorralMetrics, logger: Logger): void {
  const path = (req.url ?? '').split('?')[0];
  if (path !== METRICS_PATH) return refuse(res, 404, `not found: corral serves ${METRICS_PATH} only`);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return refuse(res, 405, `method ${req.method} not allowed: use GET ${METRICS_PATH}`);
  }
  // A scrape has no body; one is not read but refused (and the connection closed, so it is not parsed as a request either).
  if (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) !== 0) {
    return refuse(res, 413, 'a metrics request has no body');
  }
  metrics.render().then(
    (body) => {
      res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
    (e: Error) => {
      logger.error({ err: e.message }, 'rendering metrics failed');
      refuse(res, 500, `rendering metrics failed: ${e.message}`);
    },
  );
}

function refuse(res: http.ServerResponse, status: number, message: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
  res.end(`${message}\n`);
}
