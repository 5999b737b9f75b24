/**
 * The streaming server's listening socket, without the server: most nodes never exec,
 * attach or port-forward through the CRI, and the HTTP server, the SPDY and WebSocket
 * code (ws) and the runtime side cost the idle daemon several MiB. So the port is bound
 * at start (a taken port or a bad address still fails the start, and the URLs are known),
 * tokens are issued here, and the server itself is loaded when the first Exec, Attach or
 * PortForward asks for a URL (or, at the latest, when the first connection arrives; it
 * waits, paused, until then).
 */
import net from 'node:net';
import os from 'node:os';
import type { Logger } from '../util/log.js';
import type { StreamingUrls } from './requests.js';
import { TokenCache, type StreamRequest } from './token-cache.js';

/** What the loaded server must offer the listener. */
export interface AcceptingServer {
  /** Serves one connection the listener accepted (paused; the server resumes it). */
  accept(socket: net.Socket): void;
  shutdown(): Promise<void>;
}

export interface StreamingListenerOptions {
  address: string;
  /** 0 = an ephemeral port. */
  port: number;
  /** https:// URLs (the loaded server terminates TLS). */
  tls: boolean;
  logger: Logger;
  /** Loads and builds the server, once; it must take its tokens from `tokens`. */
  load(baseUrl: string, tokens: TokenCache): Promise<AcceptingServer>;
}

export class StreamingListener implements StreamingUrls {
  readonly tokens = new TokenCache();
  private loading: Promise<AcceptingServer> | undefined;
  private closed = false;

  private constructor(private readonly listener: net.Server, readonly url: string, private readonly opts: StreamingListenerOptions) {
    listener.on('connection', (socket) => this.onConnection(socket));
  }

  static async listen(opts: StreamingListenerOptions): Promise<StreamingListener> {
    // Paused: nothing is read from a connection until the server that parses it is loaded.
    const listener = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(opts.port, opts.address, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    const a = listener.address() as net.AddressInfo;
    const url = `${opts.tls ? 'https' : 'http'}://${urlHost(a.address)}:${a.port}/`;
    opts.logger.info({ url, loaded: 'on first use' }, 'streaming server listening');
    return new StreamingListener(listener, url, opts);
  }

  /** True once the server has been asked for (for tests and diagnostics). */
  get loaded(): boolean {
    return this.loading !== undefined;
  }

  /** Loads the server now (e.g. to surface a bad TLS key file at start). */
  server(): Promise<AcceptingServer> {
    if (!this.loading) {
      const p = this.opts.load(this.url, this.tokens);
      // A failed load is retried by the next request rather than cached.
      p.catch(() => {
        if (this.loading === p) this.loading = undefined;
      });
      this.loading = p;
    }
    return this.loading;
  }

  /** Caches the request under a fresh token and answers its one-time URL; starts loading the server the client is about to reach. */
  urlFor(request: StreamRequest): string {
    const url = `${this.url}${request.kind}/${this.tokens.insert(request)}`;
    this.server().catch((e: unknown) => this.opts.logger.error({ err: (e as Error).message }, 'cannot load the streaming server'));
    return url;
  }

  /** Stops listening and, if it was loaded, shuts the server down (ending every live session). */
  async shutdown(): Promise<void> {
    this.closed = true;
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    const server = this.loading ? await this.loading.catch(() => undefined) : undefined;
    await server?.shutdown();
    await closed;
  }

  private onConnection(socket: net.Socket): void {
    socket.on('error', () => socket.destroy());
    this.server().then(
      (server) => {
        if (this.closed || socket.destroyed) socket.destroy();
        else server.accept(socket);
      },
      (e: unknown) => {
        this.opts.logger.error({ err: (e as Error).message }, 'cannot load the streaming server: connection dropped');
        socket.destroy();
      },
    );
  }
}

/** The host part of the URL: the bound address, or a routable one when bound to every interface. */
export function urlHost(address: string): string {
  let host = address;
  if (host === '0.0.0.0' || host === '::') {
    const candidates = Object.values(os.networkInterfaces()).flat().filter((i) => i && !i.internal && i.family === 'IPv4');
    host = candidates[0]?.address ?? '127.0.0.1';
  }
  return net.isIPv6(host) ? `[${host}]` : host;
}
