/**
 * A real registry for tests: Debian's `docker-registry` (distribution v2.8) on
 * 127.0.0.1 with a free port, its own temp storage and generated config, in one of three
 * modes:
 *   - 'none':  anonymous pull and push;
 *   - 'basic': htpasswd users (file made with `htpasswd -Bbn`);
 *   - 'token': Bearer tokens from a token server run in this process (ES256 JWTs signed
 *              with a key and self-signed certificate made by the `openssl` CLI; it
 *              checks basic credentials and counts its requests).
 * Plus pushImage() (blob uploads and manifest PUTs with Node's http), startProxy(), an
 * HTTP proxy in front of a registry that counts requests and can tamper with, cut off,
 * redirect or answer them, and HostileServer, a small registry of its own that trickles,
 * lies about sizes and digests, sends endless bodies, redirects, and records the
 * Authorization header every request brought to each host.
 *
 * stop() kills the registry and removes its directory; anything still running when the
 * test process exits is killed then too.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { promises as fs, openSync, closeSync, readFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestBlob, TestImage, TestIndex } from './test-images.js';

export type RegistryAuthMode = 'none' | 'basic' | 'token';

export interface StartRegistryOptions {
  auth?: RegistryAuthMode;
  /** Users for 'basic' and 'token' (default { user: 'pass' }). */
  users?: Record<string, string>;
  /** Token mode: tokens' expires_in in seconds (default 300). */
  tokenExpiresIn?: number;
  /** Token mode: grant pull to anonymous token requests (default false: anonymous tokens grant nothing). */
  anonymousPull?: boolean;
}

export interface TokenRequest {
  /** The user whose basic credentials came with it; undefined = anonymous. */
  user: string | undefined;
  service: string | null;
  scopes: string[];
  /** GET (basic credentials) or POST (OAuth2 refresh token form). */
  method: string;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A free TCP port on 127.0.0.1 (bound and released; tiny race accepted). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export class TokenServer {
  readonly requests: TokenRequest[] = [];
  readonly service = 'corral-test-registry';
  readonly issuer = 'corral-test-issuer';
  private server: http.Server | undefined;
  private key!: KeyObject;
  private certDer!: Buffer;
  port = 0;
  /** Refresh tokens accepted on POST (value → user). */
  readonly refreshTokens = new Map<string, string>();

  constructor(private readonly dir: string, private readonly users: Record<string, string>, private readonly expiresIn: number, private readonly anonymousPull: boolean) {}

  get realm(): string {
    return `http://127.0.0.1:${this.port}/token`;
  }

  get certFile(): string {
    return path.join(this.dir, 'token.crt');
  }

  async start(): Promise<void> {
    const keyFile = path.join(this.dir, 'token.key');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyFile, '-out', this.certFile, '-days', '2', '-subj', '/CN=corral-test-token-issuer',
    ], { stdio: 'pipe' });
    this.key = createPrivateKey(readFileSync(keyFile));
    this.certDer = Buffer.from(new X509Certificate(readFileSync(this.certFile)).raw);
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** An ES256 JWT the registry accepts, granting `actions` on repository `repo`. */
  issue(subject: string, access: { type: string; name: string; actions: string[] }[]): string {
    const b64 = (x: Buffer | string) => Buffer.from(x).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [this.certDer.toString('base64')] };
    const claims = { iss: this.issuer, sub: subject, aud: this.service, exp: now + this.expiresIn, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key: this.key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64(sig)}`;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.pathname !== '/token') {
        res.writeHead(404).end();
        return;
      }
      let user: string | undefined;
      let scopes: string[];
      let service: string | null;
      if (req.method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        service = form.get('service');
        scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        user = this.refreshTokens.get(form.get('refresh_token') ?? '');
        this.requests.push({ user, service, scopes, method: 'POST' });
        if (form.get('grant_type') !== 'refresh_token' || !user) return void json(res, 401, { error: 'invalid_grant' });
      } else {
        service = u.searchParams.get('service');
        scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
        const authz = req.headers.authorization;
        if (authz?.startsWith('Basic ')) {
          const [name, ...rest] = Buffer.from(authz.slice(6), 'base64').toString().split(':');
          const pass = rest.join(':');
          this.requests.push({ user: name, service, scopes, method: 'GET' });
          if (!name || this.users[name] !== pass) return void json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
          user = name;
        } else {
          this.requests.push({ user: undefined, service, scopes, method: 'GET' });
        }
      }
      const access = scopes
        .map((s) => s.split(':'))
        .filter((p) => p.length === 3 && p[0] === 'repository')
        .map(([type, name, actions]) => ({
          type: type!,
          name: name!,
          actions: actions!.split(',').filter((a) => (user ? ['pull', 'push'].includes(a) : this.anonymousPull && a === 'pull')),
        }));
      const token = this.issue(user ?? 'anonymous', access);
      json(res, 200, { token, access_token: token, expires_in: this.expiresIn, issued_at: new Date().toISOString() });
    });
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const b = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': b.length }).end(b);
}

export class TestRegistry {
  port = 0;
  child: ChildProcess | undefined;
  tokenServer: TokenServer | undefined;
  readonly logFile: string;
  private exited: Promise<void> | undefined;

  constructor(readonly dir: string, readonly auth: RegistryAuthMode, readonly users: Record<string, string>) {
    this.logFile = path.join(dir, 'registry.log');
  }

  /** "127.0.0.1:<port>": the registry host as references spell it. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  get storageDir(): string {
    return path.join(this.dir, 'storage');
  }

  /** The registry's log so far. */
  logs(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** An Authorization header value that may push and pull `repo` (undefined in 'none' mode). */
  adminAuthorization(repo: string): string | undefined {
    if (this.auth === 'none') return undefined;
    const [user, pass] = Object.entries(this.users)[0]!;
    if (this.auth === 'basic') return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    return `Bearer ${this.tokenServer!.issue(user, [{ type: 'repository', name: repo, actions: ['pull', 'push'] }])}`;
  }

  async start(opts: StartRegistryOptions): Promise<void> {
    await fs.mkdir(this.storageDir, { recursive: true });
    let authYaml = '';
    if (this.auth === 'basic') {
      const lines = Object.entries(this.users).map(([u, p]) => execFileSync('htpasswd', ['-Bbn', u, p], { encoding: 'utf8' }).trim());
      const file = path.join(this.dir, 'htpasswd');
      await fs.writeFile(file, lines.join('\n') + '\n');
      authYaml = `auth:\n  htpasswd:\n    realm: corral-test\n    path: ${file}\n`;
    } else if (this.auth === 'token') {
      this.tokenServer = new TokenServer(this.dir, this.users, opts.tokenExpiresIn ?? 300, opts.anonymousPull ?? false);
      await this.tokenServer.start();
      const t = this.tokenServer;
      authYaml = `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.certFile}\n`;
    }
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      this.port = await freePort();
      const config = [
        'version: 0.1',
        'log:',
        '  level: info',
        '  formatter: text',
        '  accesslog:',
        '    disabled: false',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${this.storageDir}`,
        '  delete:',
        '    enabled: true',
        '  maintenance:',
        '    uploadpurging:',
        '      enabled: false',
        'http:',
        `  addr: 127.0.0.1:${this.port}`,
        '  secret: corral-test-secret',
        authYaml,
      ].join('\n');
      const configFile = path.join(this.dir, 'config.yml');
      await fs.writeFile(configFile, config);
      const log = openSync(this.logFile, 'a');
      const child = spawn('/usr/bin/docker-registry', ['serve', configFile], { stdio: ['ignore', log, log] });
      closeSync(log);
      live.add(child);
      this.child = child;
      this.exited = new Promise((resolve) => child.once('exit', () => {
        live.delete(child);
        resolve();
      }));
      try {
        await this.waitReady(child);
        return;
      } catch (e) {
        lastError = e;
        await this.kill();
      }
    }
    throw new Error(`docker-registry did not start: ${(lastError as Error)?.message}\n${this.logs().slice(-2000)}`);
  }

  private async waitReady(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`docker-registry exited (${child.exitCode ?? child.signalCode})`);
      try {
        const res = await rawRequest('GET', `${this.url}/v2/`);
        if (res.status === 200 || res.status === 401) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('docker-registry did not answer /v2/ within 15 s');
  }

  private async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Kills the registry and token server, and removes every file. Safe to call twice. */
  async stop(): Promise<void> {
    await this.kill();
    await this.tokenServer?.stop();
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

/** Starts a registry (see the module comment); stop() it in an after() hook. */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-registry-'));
  const reg = new TestRegistry(dir, opts.auth ?? 'none', opts.users ?? { user: 'pass' });
  try {
    await reg.start(opts);
  } catch (e) {
    await reg.stop();
    throw e;
  }
  return reg;
}

// ---- raw HTTP ----

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export function rawRequest(method: string, url: string, headers: Record<string, string> = {}, body?: Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) }, agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.end(body);
  });
}

// ---- pushing ----

/** Uploads one blob (POST an upload, then a monolithic PUT ?digest=); skips it when present. */
export async function pushBlob(reg: TestRegistry, repo: string, b: TestBlob): Promise<void> {
  const auth = reg.adminAuthorization(repo);
  const h: Record<string, string> = auth ? { authorization: auth } : {};
  const head = await rawRequest('HEAD', `${reg.url}/v2/${repo}/blobs/${b.digest}`, h);
  if (head.status === 200) return;
  const start = await rawRequest('POST', `${reg.url}/v2/${repo}/blobs/uploads/`, h);
  if (start.status !== 202 || !start.headers.location) throw new Error(`blob upload to ${repo} not started: HTTP ${start.status} ${start.body.toString()}`);
  const loc = new URL(start.headers.location, reg.url);
  loc.searchParams.set('digest', b.digest);
  const put = await rawRequest('PUT', loc.toString(), { ...h, 'content-type': 'application/octet-stream' }, b.bytes);
  if (put.status !== 201) throw new Error(`blob ${b.digest} upload to ${repo} failed: HTTP ${put.status} ${put.body.toString()}`);
}

/** PUTs a manifest or index under a tag or its digest. */
export async function pushManifest(reg: TestRegistry, repo: string, reference: string, m: TestBlob): Promise<void> {
  const auth = reg.adminAuthorization(repo);
  const put = await rawRequest('PUT', `${reg.url}/v2/${repo}/manifests/${reference}`, { ...(auth ? { authorization: auth } : {}), 'content-type': m.mediaType }, m.bytes);
  if (put.status !== 201) throw new Error(`manifest ${m.digest} push to ${repo}:${reference} failed: HTTP ${put.status} ${put.body.toString()}`);
}

/**
 * Pushes an image (blobs, then its manifest under `tag`) or an index (every image's
 * blobs and manifest by digest, then the index under `tag`). Returns the digest `tag`
 * now points at.
 */
export async function pushImage(reg: TestRegistry, repo: string, tag: string, image: TestImage | TestIndex): Promise<string> {
  if ('index' in image) {
    for (const img of image.images) {
      for (const b of img.blobs) await pushBlob(reg, repo, b);
      await pushManifest(reg, repo, img.manifest.digest, img.manifest);
    }
    await pushManifest(reg, repo, tag, image.index);
    return image.index.digest;
  }
  for (const b of image.blobs) await pushBlob(reg, repo, b);
  await pushManifest(reg, repo, tag, image.manifest);
  return image.manifest.digest;
}

/** Where the registry's filesystem driver keeps a blob's bytes (to corrupt it in tests). */
export function registryBlobPath(reg: TestRegistry, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return path.join(reg.storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

// ---- proxy ----

export interface ProxiedRequest {
  method: string;
  /** Path and query. */
  path: string;
  headers: http.IncomingHttpHeaders;
}

/** What the proxy does with one request; nothing = pass it on unchanged. */
export type ProxyAction =
  /** Answer it here. */
  | { respond: { status: number; headers?: Record<string, string>; body?: Buffer | string } }
  /** Pass it on, then replace the response body (content-length adjusted). */
  | { tamper: (body: Buffer) => Buffer }
  /** Pass it on, send `bytes` bytes of the body, then cut the connection. */
  | { cutAfter: number }
  /** Answer 307 with this Location. */
  | { redirect: string }
  /** Close the connection without answering. */
  | { hangup: true }
  /** Pass it on unchanged after a pause. */
  | { delayMs: number }
  /** Pass it on, sending the body `chunkBytes` at a time with `intervalMs` between chunks. */
  | { trickle: { chunkBytes: number; intervalMs: number } };

export interface TestProxy {
  url: string;
  host: string;
  port: number;
  requests: ProxiedRequest[];
  /** How many requests matched (method and path regex). */
  count(method: string, path: RegExp): number;
  stop(): Promise<void>;
}

/**
 * An HTTP proxy on 127.0.0.1 in front of `target` (a base URL). `onRequest` decides per
 * request (see ProxyAction). Every request is recorded in `requests`.
 */
export async function startProxy(target: string, onRequest?: (r: ProxiedRequest) => ProxyAction | void): Promise<TestProxy> {
  const requests: ProxiedRequest[] = [];
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    const r: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers };
    requests.push(r);
    const action = onRequest?.(r) ?? undefined;
    if (action && 'respond' in action) {
      const body = action.respond.body === undefined ? Buffer.alloc(0) : Buffer.from(action.respond.body);
      res.writeHead(action.respond.status, { 'content-length': String(body.length), ...(action.respond.headers ?? {}) }).end(body);
      req.resume();
      return;
    }
    if (action && 'redirect' in action) {
      res.writeHead(307, { location: action.redirect, 'content-length': '0' }).end();
      req.resume();
      return;
    }
    if (action && 'hangup' in action) {
      req.socket.destroy();
      return;
    }
    if (action && 'delayMs' in action) {
      req.pause();
      setTimeout(() => forward(req, res, undefined), action.delayMs);
      return;
    }
    forward(req, res, action);
  });
  const forward = (req: IncomingMessage, res: ServerResponse, action: ProxyAction | undefined) => {
    const headers = { ...req.headers, host: t.host };
    const up = http.request({ hostname: t.hostname, port: t.port, path: req.url, method: req.method, headers, agent: false }, (ur) => {
      if (action && 'tamper' in action) {
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', () => {
          const body = action.tamper(Buffer.concat(chunks));
          const h = { ...ur.headers, 'content-length': String(body.length) };
          delete h['transfer-encoding'];
          res.writeHead(ur.statusCode ?? 502, h).end(body);
        });
        return;
      }
      if (action && 'cutAfter' in action) {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        let sent = 0;
        ur.on('data', (c: Buffer) => {
          if (sent >= action.cutAfter) return;
          const part = c.subarray(0, action.cutAfter - sent);
          sent += part.length;
          res.write(part);
          if (sent >= action.cutAfter) {
            ur.destroy();
            setTimeout(() => res.socket?.destroy(), 20);
          }
        });
        return;
      }
      if (action && 'trickle' in action) {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', async () => {
          const body = Buffer.concat(chunks);
          for (let at = 0; at < body.length && !res.destroyed; at += action.trickle.chunkBytes) {
            res.write(body.subarray(at, at + action.trickle.chunkBytes));
            await new Promise((r) => setTimeout(r, action.trickle.intervalMs));
          }
          res.end();
        });
        return;
      }
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
    req.resume();
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    requests,
    count: (method, p) => requests.filter((r) => r.method === method && p.test(r.path)).length,
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** sha256 of bytes as a digest (for tests that build their own content). */
export function digestOf(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

// ---- hostile registry ----

/** One request a HostileServer received. */
export interface HostileRequest {
  method: string;
  /** Path and query. */
  path: string;
  /** "address:port" of the server that received it (which "host" the client talked to). */
  server: string;
  /** The Host header the client sent. */
  hostHeader: string | undefined;
  authorization: string | undefined;
  /** The request body (the OAuth2 form of a token POST). */
  body: string;
}

/** How a HostileServer answers one request. */
export type HostileReply =
  /** A plain answer. */
  | { status: number; headers?: Record<string, string>; body?: Buffer | string }
  /** 200 with the body's true Content-Length, sent `bytesPerTick` bytes every `intervalMs`. */
  | { trickle: Buffer; bytesPerTick: number; intervalMs: number; headers?: Record<string, string> }
  /** 200 with a body that never ends (chunked, or under a Content-Length it then exceeds). */
  | { endless: true; status?: number; contentLength?: number; headers?: Record<string, string> }
  /** 200 whose Content-Length header says `contentLength`, then `body` (shorter or longer), then the connection closes. */
  | { lie: { body: Buffer; contentLength: number }; headers?: Record<string, string> }
  /** A redirect (307 unless said otherwise). */
  | { redirect: string; status?: 301 | 302 | 303 | 307 | 308 }
  /** Headers never come. */
  | { hang: true };

type HostileRoute = { method?: string; path: RegExp; reply: (r: HostileRequest) => HostileReply | undefined };

/** A PEM key and self-signed certificate for `names` (DNS names and IP addresses), made by the openssl CLI. */
export async function makeTestCertificate(names: string[]): Promise<{ key: string; cert: string; certFile: string; dir: string }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cert-'));
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  const san = names.map((n) => (net.isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${san}`,
  ], { stdio: 'pipe' });
  return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8'), certFile, dir };
}

/**
 * A small registry that lies on demand, on a loopback address of its own (127.0.0.1,
 * 127.0.0.2, ... are distinct "hosts"), over HTTP or HTTPS. It serves images given to
 * serveImage() (manifests by tag and digest, blobs), optionally behind Basic or Bearer
 * auth, optionally a token endpoint; routes added with on() answer first and can
 * trickle, lie about sizes, send endless bodies, redirect or hang. Every request is
 * recorded with its Authorization header and body, so tests can say where credentials
 * did and did not go.
 */
export class HostileServer {
  readonly requests: HostileRequest[] = [];
  port = 0;
  private server: http.Server | undefined;
  private readonly routes: HostileRoute[] = [];
  private readonly manifests = new Map<string, TestBlob>();
  private readonly blobs = new Map<string, TestBlob>();
  private auth: { basic?: { user: string; pass: string }; bearer?: { realm: string; service: string; token: string } } = {};
  private tokens: { path: string; users: Record<string, string>; refreshTokens: Record<string, string>; token: string } | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(readonly address = '127.0.0.1', private readonly tlsCert?: { key: string; cert: string }) {}

  /** "address:port". */
  get host(): string {
    return `${this.address}:${this.port}`;
  }

  get url(): string {
    return `${this.tlsCert ? 'https' : 'http'}://${this.host}`;
  }

  async start(): Promise<this> {
    const handler = (req: IncomingMessage, res: ServerResponse) => this.handle(req, res);
    this.server = this.tlsCert ? https.createServer({ key: this.tlsCert.key, cert: this.tlsCert.cert }, handler) : http.createServer(handler);
    // TLS handshakes that fail are the client refusing: not the server's business.
    this.server.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, this.address, () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** Answers requests matching (method and path regex) with `reply` (a function may return undefined to pass). Newest route first. */
  on(path: RegExp, reply: HostileReply | ((r: HostileRequest) => HostileReply | undefined), method?: string): this {
    this.routes.unshift({ method, path, reply: typeof reply === 'function' ? reply : () => reply });
    return this;
  }

  /** Serves an image: its manifest under `repo:tag` and by digest, and its blobs. */
  serveImage(repo: string, tag: string, image: TestImage): this {
    this.manifests.set(`${repo}:${tag}`, image.manifest);
    this.manifests.set(`${repo}:${image.manifest.digest}`, image.manifest);
    for (const b of image.blobs) this.blobs.set(b.digest, b);
    return this;
  }

  /** /v2/ requests need these Basic credentials (401 with a Basic challenge otherwise). */
  requireBasic(user: string, pass: string): this {
    this.auth = { basic: { user, pass } };
    return this;
  }

  /** /v2/ requests need `Bearer <token>` (401 with a Bearer challenge naming `realm` otherwise). */
  requireBearer(realm: string, token = 'the-registry-token', service = 'hostile-registry'): this {
    this.auth = { bearer: { realm, service, token } };
    return this;
  }

  /** A token endpoint at `path`: GET with these Basic users, or an OAuth2 POST with these refresh tokens, gets `token`. */
  serveTokens(o: { path?: string; users?: Record<string, string>; refreshTokens?: Record<string, string>; token?: string } = {}): this {
    this.tokens = { path: o.path ?? '/token', users: o.users ?? {}, refreshTokens: o.refreshTokens ?? {}, token: o.token ?? 'the-registry-token' };
    return this;
  }

  /** Authorization headers received (undefined entries are requests without one). */
  authorizations(): (string | undefined)[] {
    return this.requests.map((r) => r.authorization);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: HostileRequest = {
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        server: this.host,
        hostHeader: req.headers.host,
        authorization: req.headers.authorization,
        body: Buffer.concat(chunks).toString(),
      };
      this.requests.push(r);
      let reply: HostileReply | undefined;
      for (const route of this.routes) {
        if (route.method && route.method !== r.method) continue;
        if (!route.path.test(r.path)) continue;
        reply = route.reply(r);
        if (reply) break;
      }
      this.send(res, reply ?? this.answer(r));
    });
  }

  /** The default, honest answer. */
  private answer(r: HostileRequest): HostileReply {
    const u = new URL(r.path, 'http://x');
    const json = (status: number, body: unknown, headers: Record<string, string> = {}): HostileReply => ({ status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    if (this.tokens && u.pathname === this.tokens.path) {
      let ok = false;
      if (r.method === 'POST') {
        const form = new URLSearchParams(r.body);
        ok = form.get('grant_type') === 'refresh_token' && (form.get('refresh_token') ?? '') in this.tokens.refreshTokens;
      } else if (r.authorization?.startsWith('Basic ')) {
        const [name, ...rest] = Buffer.from(r.authorization.slice(6), 'base64').toString().split(':');
        ok = !!name && this.tokens.users[name] === rest.join(':');
      }
      return ok ? json(200, { token: this.tokens.token, expires_in: 300 }) : json(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
    }
    if (!u.pathname.startsWith('/v2/')) return json(404, { errors: [{ code: 'NOT_FOUND', message: 'no such path' }] });
    const { basic, bearer } = this.auth;
    if (basic && r.authorization !== `Basic ${Buffer.from(`${basic.user}:${basic.pass}`).toString('base64')}`) {
      return json(401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': 'Basic realm="hostile"' });
    }
    if (bearer && r.authorization !== `Bearer ${bearer.token}`) {
      const repo = /^\/v2\/(.+)\/(manifests|blobs)\//.exec(u.pathname)?.[1] ?? '';
      return json(401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, {
        'www-authenticate': `Bearer realm="${bearer.realm}",service="${bearer.service}",scope="repository:${repo}:pull"`,
      });
    }
    if (u.pathname === '/v2/') return json(200, {});
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(u.pathname);
    if (m) {
      const [, repo, kind, ref] = m;
      const b = kind === 'manifests' ? this.manifests.get(`${repo}:${ref}`) : this.blobs.get(ref!);
      if (b) {
        const headers: Record<string, string> = { 'content-type': kind === 'manifests' ? b.mediaType : 'application/octet-stream', 'docker-content-digest': b.digest };
        return { status: 200, headers, body: r.method === 'HEAD' ? '' : b.bytes };
      }
      return json(404, { errors: [{ code: kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', message: `${kind.slice(0, -1)} unknown` }] });
    }
    return json(404, { errors: [{ code: 'NOT_FOUND', message: 'no such path' }] });
  }

  private send(res: ServerResponse, reply: HostileReply): void {
    const later = (ms: number, fn: () => void) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        fn();
      }, ms);
      this.timers.add(t);
    };
    res.on('error', () => undefined);
    if ('hang' in reply) return;
    if ('redirect' in reply) {
      res.writeHead(reply.status ?? 307, { location: reply.redirect, 'content-length': '0' }).end();
      return;
    }
    if ('trickle' in reply) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(reply.trickle.length), ...(reply.headers ?? {}) });
      let at = 0;
      const tick = () => {
        if (res.destroyed || res.writableEnded) return;
        res.write(reply.trickle.subarray(at, at + reply.bytesPerTick));
        at += reply.bytesPerTick;
        if (at >= reply.trickle.length) res.end();
        else later(reply.intervalMs, tick);
      };
      tick();
      return;
    }
    if ('endless' in reply) {
      const headers: Record<string, string> = { 'content-type': 'application/json', ...(reply.headers ?? {}) };
      if (reply.contentLength !== undefined) headers['content-length'] = String(reply.contentLength);
      res.writeHead(reply.status ?? 200, headers);
      if (reply.contentLength !== undefined) res.flushHeaders();
      // With a Content-Length the server's own checks would stop it: write to the socket.
      const sink: { write(b: Buffer): boolean; destroyed?: boolean } = reply.contentLength !== undefined ? res.socket! : res;
      const chunk = Buffer.alloc(64 * 1024, 0x7b); // '{{{{...'
      const pump = () => {
        while (!res.destroyed && !(sink as { destroyed?: boolean }).destroyed) {
          if (!sink.write(chunk)) {
            (sink as unknown as NodeJS.EventEmitter).once('drain', pump);
            return;
          }
        }
      };
      pump();
      return;
    }
    if ('lie' in reply) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(reply.lie.contentLength), ...(reply.headers ?? {}) });
      res.flushHeaders();
      // Straight to the socket: Node's server would otherwise refuse the mismatch.
      res.socket?.write(reply.lie.body, () => later(50, () => res.socket?.destroy()));
      return;
    }
    const body = reply.body === undefined ? Buffer.alloc(0) : Buffer.from(reply.body);
    res.writeHead(reply.status, { 'content-length': String(body.length), ...(reply.headers ?? {}) }).end(body);
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }
}

/** Starts a HostileServer on `address` (HTTPS with `tls`); stop() it when done. */
export function startHostileServer(address = '127.0.0.1', tls?: { key: string; cert: string }): Promise<HostileServer> {
  return new HostileServer(address, tls).start();
}

/**
 * A DNS lookup for tests: the names given resolve to their loopback address, every
 * other name fails (nothing leaves the machine). Answers both lookup forms Node uses.
 */
export function testLookup(names: Record<string, string>): LookupFunction {
  return ((hostname: string, opts: { all?: boolean } | number | undefined, cb: (...a: unknown[]) => void) => {
    const address = names[hostname.toLowerCase()];
    process.nextTick(() => {
      if (!address) return cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname} (test DNS)`), { code: 'ENOTFOUND', hostname }));
      const family = net.isIPv6(address) ? 6 : 4;
      if (typeof opts === 'object' && opts?.all) cb(null, [{ address, family }]);
      else cb(null, address, family);
    });
  }) as unknown as LookupFunction;
}
