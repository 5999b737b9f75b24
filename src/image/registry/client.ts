/**
 * A client of the OCI distribution API (pull side): resolves a reference to the manifest
 * for a platform, and opens blob downloads, trying a registry's mirrors before the
 * registry itself and authenticating as the registry asks (anonymous first; then Basic,
 * or Bearer tokens from the realm it names, cached per endpoint, scope and credentials).
 *
 * Manifests are verified here (sha256 against Docker-Content-Digest and against the
 * digest they were asked for); blobs are verified by the content store as they stream in.
 *
 * Credentials go only where they are for: the registry itself (or the host the
 * AuthConfig's serverAddress names), and the token realm it names, never over plain HTTP
 * when the registry is HTTPS, never across origins on redirects. A registry's TLS
 * settings (tls_verify, ca_file) apply to the hosts configured for it (the registry and
 * its mirrors) only: a realm or redirect target elsewhere gets its own settings, or the
 * default verification.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import type { RegistryConfig } from '../../config/config.js';
import type { Logger } from '../../util/log.js';
import { isDigest, manifestReference, parseReference, type ImageReference } from '../reference.js';
import {
  basicAuthorization,
  credentialKey,
  credentialsGoTo,
  parseWwwAuthenticate,
  pullScope,
  resolveCredentials,
  TokenCache,
  type AuthConfig,
  type Challenge,
  type Credentials,
} from './auth.js';
import { registryConfigFor, registryEndpoints, type Endpoint } from './endpoints.js';
import { describeTransportError, RegistryError, type RegistryErrorKind } from './errors.js';
import { discard, errorBodyReason, httpRequest, readBody, type HttpResponse } from './http.js';
import {
  CONFIG_TYPES,
  detectManifestType,
  INDEX_TYPES,
  LAYER_TYPES,
  MANIFEST_ACCEPT,
  MANIFEST_TYPES,
  MT_DOCKER_SCHEMA1,
  MT_DOCKER_SCHEMA1_SIGNED,
  type Descriptor,
} from './media-types.js';
import { formatPlatform, hostPlatform, normalizePlatform, selectPlatformManifest, type Platform } from './platform.js';
import { MAX_JSON_BLOB_BYTES } from '../../util/safe-read.js';
import { untilAborted } from '../../util/abort.js';

export interface RegistryClientOptions {
  /** Per-registry settings (mirrors, insecure, tlsVerify, caFile), keyed by host[:port]. */
  registries?: Record<string, RegistryConfig>;
  logger?: Logger;
  /** Milliseconds to connect, and of silence tolerated at any point of a request (default 30 000). */
  timeoutMs?: number;
  /** DNS lookup for every connection (tests use it to see or forbid host names). */
  lookup?: LookupFunction;
  userAgent?: string;
  /** The clock of the token cache (tests). */
  now?: () => number;
  /** Largest manifest or index accepted (default 4 MiB). */
  maxManifestBytes?: number;
}

/** A reference resolved to one image manifest. */
export interface ResolvedImage {
  /** The normalised reference resolved. */
  reference: string;
  manifestDigest: string;
  /** The manifest's bytes exactly as served (their sha256 is manifestDigest). */
  manifest: Buffer;
  /** The manifest's media type (OCI manifest or Docker schema 2). */
  mediaType: string;
  /** Set when the reference named an index / manifest list the manifest was chosen from. */
  indexDigest?: string;
  index?: Buffer;
  indexMediaType?: string;
  /** The digest the reference points at: the index's when there is one, else the manifest's (for repo digests). */
  referenceDigest: string;
  /** The platform of the chosen index entry (absent for a single-manifest reference). */
  platform?: Platform;
  config: Descriptor;
  /** Bottom layer first. */
  layers: Descriptor[];
  /** Base URL of the endpoint that served the manifest, and whether it is a mirror. */
  endpoint: string;
  mirror: boolean;
}

/** What a caller (a pull) gives every request it makes. */
export interface RequestOptions {
  /** Ends every request of the call (and a blob's body while it streams) with the signal's reason. */
  signal?: AbortSignal;
  /** Hears the length of each manifest chunk received (a pull's progress). */
  onBytes?: (bytes: number) => void;
}

export interface FetchBlobOptions extends RequestOptions {
  /** Base URL of the endpoint to try first (a ResolvedImage's `endpoint`); the others follow in order. */
  endpoint?: string;
}

/** Per-request context: the reference and the AuthConfig of this pull. */
interface PullContext {
  ref: ImageReference;
  auth: AuthConfig | undefined;
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

/** How an endpoint asked to be authenticated, remembered to authenticate the next request up front. */
type EndpointScheme = { scheme: 'basic' } | { scheme: 'bearer'; challenge: Challenge };

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_MANIFEST = MAX_JSON_BLOB_BYTES;

export class RegistryClient {
  private readonly registries: Record<string, RegistryConfig>;
  private readonly timeoutMs: number;
  private readonly maxManifestBytes: number;
  private readonly userAgent: string;
  readonly tokens: TokenCache;
  private readonly schemes = new Map<string, EndpointScheme>();
  private readonly tokenRequests = new Map<string, Promise<string>>();
  private readonly agents = new Map<string, Promise<{ http: http.Agent; https: https.Agent }>>();

  constructor(private readonly opts: RegistryClientOptions = {}) {
    this.registries = opts.registries ?? {};
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxManifestBytes = opts.maxManifestBytes ?? DEFAULT_MAX_MANIFEST;
    this.userAgent = opts.userAgent ?? 'corral';
    this.tokens = new TokenCache(opts.now);
  }

  /** The endpoints a reference is pulled from, in the order tried. */
  endpointsFor(ref: ImageReference | string): Endpoint[] {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    return registryEndpoints(r.domain, this.registries);
  }

  /**
   * Resolves a reference to the image manifest for `platform`: fetches the manifest (or
   * index, then the platform's entry), verifies digests, and checks it is an image this
   * runtime can pull. Each mirror is tried before the registry; any failure at a mirror
   * moves on to the next endpoint, and the final error lists what each one said.
   */
  async resolve(ref: ImageReference | string, platform: Platform = hostPlatform(), auth?: AuthConfig, opts: RequestOptions = {}): Promise<ResolvedImage> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const ctx: PullContext = { ref: r, auth, signal: opts.signal, onBytes: opts.onBytes };
    const errors: RegistryError[] = [];
    for (const ep of this.endpointsFor(r)) {
      try {
        return await this.resolveAt(ep, ctx, normalizePlatform(platform));
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason; // the caller gave up: no next endpoint
        const err = this.asRegistryError(e, r, ep);
        this.opts.logger?.debug({ ref: r.toString(), endpoint: ep.url, mirror: ep.mirror, kind: err.kind }, 'registry endpoint failed to resolve');
        errors.push(err);
      }
    }
    throw RegistryError.combine(r.toString(), errors);
  }

  /**
   * Opens a blob for reading (redirects followed). The stream is the raw body: give it to
   * ContentStore.ingest, which verifies digest and size. Endpoints are tried in order
   * (the given one first) until one serves the blob.
   */
  async fetchBlob(ref: ImageReference | string, descriptor: Pick<Descriptor, 'digest' | 'size'>, auth?: AuthConfig, opts: FetchBlobOptions = {}): Promise<Readable> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const ctx: PullContext = { ref: r, auth, signal: opts.signal };
    if (!isDigest(descriptor.digest)) {
      throw new RegistryError('protocol', r.toString(), [], `blob digest "${descriptor.digest}" is not a sha256 digest`);
    }
    let endpoints = this.endpointsFor(r);
    if (opts.endpoint) {
      const first = endpoints.filter((e) => e.url === opts.endpoint);
      endpoints = [...first, ...endpoints.filter((e) => e.url !== opts.endpoint)];
    }
    const errors: RegistryError[] = [];
    for (const ep of endpoints) {
      try {
        return await this.openBlobAt(ep, ctx, descriptor);
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason;
        errors.push(this.asRegistryError(e, r, ep));
      }
    }
    throw RegistryError.combine(r.toString(), errors);
  }

  /** Closes idle connections. */
  close(): void {
    for (const p of this.agents.values()) {
      void p.then((a) => {
        a.http.destroy();
        a.https.destroy();
      });
    }
    this.agents.clear();
  }

  private async openBlobAt(ep: Endpoint, ctx: PullContext, d: Pick<Descriptor, 'digest' | 'size'>): Promise<Readable> {
    const res = await this.request(ep, ctx, `blobs/${d.digest}`, { accept: '*/*' });
    if (res.status !== 200) {
      const reason = await errorBodyReason(res.body);
      throw this.statusError(ep, ctx, res.status, `blob ${d.digest}`, reason);
    }
    const len = Number(res.headers['content-length']);
    if (res.headers['content-length'] !== undefined && Number.isFinite(len) && Number.isFinite(d.size) && len !== d.size) {
      res.body.destroy();
      throw RegistryError.at('digest-mismatch', ctx.ref.toString(), ep, `blob ${d.digest} is ${d.size} bytes per its descriptor, but the registry sends ${len}`);
    }
    return res.body;
  }

  private async resolveAt(ep: Endpoint, ctx: PullContext, platform: Platform): Promise<ResolvedImage> {
    const r = ctx.ref;
    const top = await this.fetchManifest(ep, ctx, manifestReference(r), r.digest ? { digest: r.digest } : undefined);
    const base = { reference: r.toString(), endpoint: ep.url, mirror: ep.mirror };
    if (INDEX_TYPES.has(top.mediaType)) {
      const manifests = (top.doc as { manifests?: unknown }).manifests;
      if (!Array.isArray(manifests)) throw this.fail('protocol', ep, ctx, `index ${top.digest} has no "manifests" list`);
      const chosen = selectPlatformManifest(manifests as Descriptor[], platform);
      if (!chosen) {
        const have = (manifests as Descriptor[]).filter((m) => m.platform).map((m) => formatPlatform(normalizePlatform(m.platform as Platform)));
        throw this.fail('no-matching-platform', ep, ctx, `index ${top.digest} has no manifest for ${formatPlatform(platform)} (it has: ${have.join(', ') || 'none'})`);
      }
      this.checkDescriptor(ep, ctx, chosen, `index ${top.digest} entry`);
      if (INDEX_TYPES.has(chosen.mediaType)) {
        throw this.fail('unsupported-media-type', ep, ctx, `index ${top.digest} points at another index (${chosen.digest}); nested indexes are not supported`);
      }
      const m = await this.fetchManifest(ep, ctx, chosen.digest, { digest: chosen.digest, size: chosen.size });
      if (!MANIFEST_TYPES.has(m.mediaType)) throw this.unsupported(ep, ctx, m.mediaType, m.digest);
      return {
        ...base,
        ...this.imageParts(ep, ctx, m),
        indexDigest: top.digest,
        index: top.bytes,
        indexMediaType: top.mediaType,
        referenceDigest: top.digest,
        platform: normalizePlatform(chosen.platform as Platform),
      };
    }
    if (!MANIFEST_TYPES.has(top.mediaType)) throw this.unsupported(ep, ctx, top.mediaType, top.digest);
    return { ...base, ...this.imageParts(ep, ctx, top), referenceDigest: top.digest };
  }

  private unsupported(ep: Endpoint, ctx: PullContext, mediaType: string, digest: string): RegistryError {
    if (mediaType === MT_DOCKER_SCHEMA1 || mediaType === MT_DOCKER_SCHEMA1_SIGNED) {
      return this.fail('unsupported-media-type', ep, ctx, `manifest ${digest} is Docker image manifest schema 1 (${mediaType}), which is not supported; push the image again with a current client`);
    }
    return this.fail('unsupported-media-type', ep, ctx, `manifest ${digest} has media type "${mediaType}", which is not a container image manifest or index`);
  }

  private imageParts(ep: Endpoint, ctx: PullContext, m: FetchedManifest) {
    const doc = m.doc as { schemaVersion?: unknown; config?: Descriptor; layers?: Descriptor[] };
    if (doc.schemaVersion !== 2) throw this.fail('protocol', ep, ctx, `manifest ${m.digest} has schemaVersion ${String(doc.schemaVersion)}, expected 2`);
    if (!doc.config || typeof doc.config !== 'object') throw this.fail('protocol', ep, ctx, `manifest ${m.digest} has no config descriptor`);
    this.checkDescriptor(ep, ctx, doc.config, `manifest ${m.digest} config`);
    if (!CONFIG_TYPES.has(doc.config.mediaType)) {
      throw this.fail('unsupported-media-type', ep, ctx, `manifest ${m.digest} is not a container image: its config has media type "${doc.config.mediaType}"`);
    }
    if (!Array.isArray(doc.layers)) throw this.fail('protocol', ep, ctx, `manifest ${m.digest} has no "layers" list`);
    const layers = doc.layers.map((l, i) => {
      this.checkDescriptor(ep, ctx, l, `manifest ${m.digest} layer ${i}`);
      if (!LAYER_TYPES.has(l.mediaType)) {
        throw this.fail('unsupported-media-type', ep, ctx, `manifest ${m.digest} layer ${i} (${l.digest}) has unsupported media type "${l.mediaType}"`);
      }
      return pickDescriptor(l);
    });
    return { manifestDigest: m.digest, manifest: m.bytes, mediaType: m.mediaType, config: pickDescriptor(doc.config), layers };
  }

  private checkDescriptor(ep: Endpoint, ctx: PullContext, d: unknown, what: string): asserts d is Descriptor {
    const x = d as Partial<Descriptor> | null;
    if (!x || typeof x !== 'object') throw this.fail('protocol', ep, ctx, `${what}: not a descriptor`);
    if (typeof x.digest !== 'string' || !isDigest(x.digest)) throw this.fail('protocol', ep, ctx, `${what}: digest "${String(x.digest)}" is not a sha256 digest`);
    if (typeof x.size !== 'number' || !Number.isSafeInteger(x.size) || x.size < 0) throw this.fail('protocol', ep, ctx, `${what}: bad size ${String(x.size)}`);
    if (typeof x.mediaType !== 'string' || !x.mediaType) throw this.fail('protocol', ep, ctx, `${what}: no media type`);
  }

  private async fetchManifest(ep: Endpoint, ctx: PullContext, reference: string, expected?: { digest: string; size?: number }): Promise<FetchedManifest> {
    const res = await this.request(ep, ctx, `manifests/${reference}`, { accept: MANIFEST_ACCEPT });
    if (res.status !== 200) {
      const reason = await errorBodyReason(res.body);
      throw this.statusError(ep, ctx, res.status, `manifest ${reference}`, reason);
    }
    let bytes: Buffer;
    try {
      bytes = await readBody(res.body, this.maxManifestBytes, ctx.onBytes);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_BODY_TOO_LARGE') throw this.fail('protocol', ep, ctx, `manifest ${reference}: ${(e as Error).message}`);
      throw e;
    }
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
      throw this.fail('digest-mismatch', ep, ctx, `manifest ${reference}: the registry says its digest is ${header}, but the bytes served hash to ${digest}`);
    }
    if (expected && expected.digest !== digest) {
      throw this.fail('digest-mismatch', ep, ctx, `manifest ${reference}: expected digest ${expected.digest}, got ${digest}`);
    }
    if (expected?.size !== undefined && expected.size !== bytes.length) {
      throw this.fail('digest-mismatch', ep, ctx, `manifest ${reference}: expected ${expected.size} bytes, got ${bytes.length}`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw this.fail('protocol', ep, ctx, `manifest ${reference} is not valid JSON: ${(e as Error).message}`);
    }
    const contentType = typeof res.headers['content-type'] === 'string' ? res.headers['content-type'] : undefined;
    return { digest, bytes, doc, mediaType: detectManifestType(contentType, doc) };
  }

  private statusError(ep: Endpoint, ctx: PullContext, status: number, what: string, reason: string): RegistryError {
    const why = reason ? `: ${reason}` : '';
    if (status === 404) return this.fail('not-found', ep, ctx, `${what} not found (HTTP 404${why})`);
    if (status === 401 || status === 403) return this.fail('unauthorized', ep, ctx, `${what}: access denied (HTTP ${status}${why})`);
    if (status === 429 || status >= 500) return this.fail('unreachable', ep, ctx, `${what}: registry answered HTTP ${status}${why}`);
    return this.fail('protocol', ep, ctx, `${what}: unexpected HTTP ${status}${why}`);
  }

  private fail(kind: RegistryErrorKind, ep: Endpoint, ctx: PullContext, reason: string): RegistryError {
    return RegistryError.at(kind, ctx.ref.toString(), ep, reason);
  }

  private asRegistryError(e: unknown, ref: ImageReference, ep: Endpoint): RegistryError {
    if (e instanceof RegistryError) return e;
    const { kind, reason } = describeTransportError(e);
    return RegistryError.at(kind, ref.toString(), ep, reason);
  }

  // ---- requests and authentication ----

  private credentialsFor(ep: Endpoint, ctx: PullContext): Credentials | undefined {
    if (!credentialsGoTo(ctx.auth, ctx.ref.domain, ep)) return undefined;
    return resolveCredentials(ctx.auth);
  }

  /**
   * A request to `<api>/<repository>/<suffix>`, authenticated: up front when the endpoint
   * is known to want it, else after its 401 challenge (once).
   */
  private async request(ep: Endpoint, ctx: PullContext, suffix: string, h: { accept: string }): Promise<HttpResponse> {
    const url = `${ep.api}/${ctx.ref.path}/${suffix}`;
    const scope = pullScope(ctx.ref.path);
    const creds = this.credentialsFor(ep, ctx);
    const headers: Record<string, string> = { accept: h.accept };
    const known = await this.knownAuthorization(ep, ctx, scope, creds);
    if (known) headers.authorization = known;
    let res = await this.send(url, ep, { headers, signal: ctx.signal });
    if (res.status !== 401) return res;

    const challenges = parseWwwAuthenticate(res.headers['www-authenticate']);
    const firstReason = await errorBodyReason(res.body);
    if (known) this.forget(ep, scope, creds);
    const answer = await this.answerChallenge(ep, ctx, challenges, scope, creds, firstReason);
    headers.authorization = answer;
    res = await this.send(url, ep, { headers, signal: ctx.signal });
    if (res.status === 401) {
      const reason = await errorBodyReason(res.body);
      this.forget(ep, scope, creds);
      throw this.fail('unauthorized', ep, ctx, `${creds ? 'the credentials given were rejected' : 'authentication required'} (HTTP 401${reason ? `: ${reason}` : ''})`);
    }
    return res;
  }

  private send(url: string, ep: Endpoint, o: { method?: 'GET' | 'POST'; headers: Record<string, string>; body?: string; signal?: AbortSignal }): Promise<HttpResponse> {
    return httpRequest(url, {
      method: o.method ?? 'GET',
      headers: { 'user-agent': this.userAgent, ...o.headers },
      body: o.body,
      // Chosen per hop: a redirect target or token realm is not the endpoint.
      agent: async (u) => {
        const agents = await this.agentsFor(this.tlsSettingsFor(u, ep));
        return u.protocol === 'https:' ? agents.https : agents.http;
      },
      timeoutMs: this.timeoutMs,
      lookup: this.opts.lookup,
      signal: o.signal,
    });
  }

  /**
   * The TLS settings for a URL: the endpoint's for its own host (they were configured for
   * it), else those configured for that exact host, else full verification. So
   * `tls_verify = false` for a registry never reaches the realm or CDN it points at.
   */
  private tlsSettingsFor(u: URL, ep: Endpoint): { tlsVerify: boolean; caFile: string } {
    if (u.host.toLowerCase() === new URL(ep.url).host.toLowerCase()) return { tlsVerify: ep.tlsVerify, caFile: ep.caFile };
    const own = registryConfigFor(u.host.toLowerCase(), this.registries);
    return { tlsVerify: own?.tlsVerify ?? true, caFile: own?.caFile ?? '' };
  }

  private agentsFor(tlsSettings: { tlsVerify: boolean; caFile: string }): Promise<{ http: http.Agent; https: https.Agent }> {
    const { tlsVerify, caFile } = tlsSettings;
    const key = `${tlsVerify}\n${caFile}`;
    let p = this.agents.get(key);
    if (!p) {
      p = (async () => {
        const ca = caFile ? [...tls.rootCertificates, await fs.readFile(caFile, 'utf8')] : undefined;
        return {
          http: new http.Agent({ keepAlive: true, maxSockets: 16 }),
          https: new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: tlsVerify, ...(ca ? { ca } : {}) }),
        };
      })();
      p.catch(() => this.agents.delete(key));
      this.agents.set(key, p);
    }
    return p;
  }

  private schemeKey(ep: Endpoint, creds: Credentials | undefined): string {
    return `${ep.api}\n${credentialKey(creds)}`;
  }

  private tokenKey(ep: Endpoint, scope: string, creds: Credentials | undefined): string {
    return TokenCache.key(ep.api, scope, credentialKey(creds));
  }

  private forget(ep: Endpoint, scope: string, creds: Credentials | undefined): void {
    this.tokens.delete(this.tokenKey(ep, scope, creds));
  }

  /** The Authorization for an endpoint that challenged before (cached or freshly fetched token, or Basic). */
  private async knownAuthorization(ep: Endpoint, ctx: PullContext, scope: string, creds: Credentials | undefined): Promise<string | undefined> {
    const s = this.schemes.get(this.schemeKey(ep, creds));
    if (!s) return undefined;
    if (s.scheme === 'basic') return creds?.username !== undefined ? basicAuthorization(creds.username, creds.password ?? '') : undefined;
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    try {
      return `Bearer ${await this.token(ep, ctx, s.challenge, scope, creds)}`;
    } catch {
      return undefined; // fall back to the challenge round trip, which reports properly
    }
  }

  private async answerChallenge(
    ep: Endpoint,
    ctx: PullContext,
    challenges: Challenge[],
    scope: string,
    creds: Credentials | undefined,
    reason: string,
  ): Promise<string> {
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      this.schemes.set(this.schemeKey(ep, creds), { scheme: 'bearer', challenge: bearer });
      if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
      return `Bearer ${await this.token(ep, ctx, bearer, scope, creds)}`;
    }
    if (basic) {
      if (creds?.username === undefined) {
        throw this.fail('unauthorized', ep, ctx, `the registry requires basic authentication and no credentials were given (HTTP 401${reason ? `: ${reason}` : ''})`);
      }
      this.schemes.set(this.schemeKey(ep, creds), { scheme: 'basic' });
      return basicAuthorization(creds.username, creds.password ?? '');
    }
    const offered = challenges.map((c) => c.scheme).join(', ') || 'none';
    throw this.fail('unauthorized', ep, ctx, `HTTP 401 with no usable authentication challenge (offered: ${offered})${reason ? `: ${reason}` : ''}`);
  }

  /**
   * A bearer token for the scope: cached, or one request to the realm, shared by
   * concurrent callers. The shared request has a deadline of its own (one caller giving up
   * must not fail the others); each caller stops waiting when its own signal aborts.
   */
  private token(ep: Endpoint, ctx: PullContext, challenge: Challenge, scope: string, creds: Credentials | undefined): Promise<string> {
    const key = this.tokenKey(ep, scope, creds);
    const cached = this.tokens.get(key);
    if (cached) return Promise.resolve(cached);
    let p = this.tokenRequests.get(key);
    if (!p) {
      const deadline = deadlineSignal(this.timeoutMs, `the token service did not answer within ${Math.round(this.timeoutMs / 1000)} s`);
      p = this.requestToken(ep, { ...ctx, signal: deadline.signal, onBytes: undefined }, challenge, scope, creds, key).finally(() => {
        deadline.clear();
        this.tokenRequests.delete(key);
      });
      p.catch(() => undefined); // a caller that gave up no longer listens
      this.tokenRequests.set(key, p);
    }
    return untilAborted(p, ctx.signal);
  }

  private async requestToken(ep: Endpoint, ctx: PullContext, challenge: Challenge, scope: string, creds: Credentials | undefined, key: string): Promise<string> {
    let realm: URL;
    try {
      realm = new URL(challenge.params.realm!);
      if (realm.protocol !== 'http:' && realm.protocol !== 'https:') throw new Error('not http(s)');
    } catch {
      throw this.fail('protocol', ep, ctx, `the bearer challenge names an invalid token realm "${challenge.params.realm}"`);
    }
    const sendsSecret = creds?.username !== undefined || creds?.identityToken !== undefined;
    if (sendsSecret && realm.protocol === 'http:' && new URL(ep.url).protocol === 'https:') {
      // A downgrade: the secret is for an HTTPS registry, the realm would get it in clear text.
      throw this.fail(
        'unauthorized',
        ep,
        ctx,
        `the registry's token realm ${realm.origin}${realm.pathname} is plain HTTP; credentials for an HTTPS registry are not sent over it (fix the registry's token realm, or configure the registry insecure if it really is plain HTTP)`,
      );
    }
    const scopes = [scope];
    for (const s of (challenge.params.scope ?? '').split(' ')) if (s && !scopes.includes(s)) scopes.push(s);
    const service = challenge.params.service;
    const where = `token service ${realm.origin}${realm.pathname}`;

    let res: HttpResponse;
    try {
      if (creds?.identityToken) {
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'corral', scope: scopes.join(' ') });
        if (service) form.set('service', service);
        res = await this.send(realm.toString(), ep, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: form.toString(),
          signal: ctx.signal,
        });
        if (res.status === 404 || res.status === 405) {
          // No OAuth2 endpoint: the identity token also works as a basic-auth password.
          discard(res.body);
          res = await this.getToken(realm, ep, ctx, service, scopes, creds.username ?? '<token>', creds.identityToken);
        }
      } else {
        res = await this.getToken(realm, ep, ctx, service, scopes, creds?.username, creds?.password);
      }
    } catch (e) {
      const { kind, reason } = describeTransportError(e);
      throw this.fail(kind, ep, ctx, `${where}: ${reason}`);
    }
    if (res.status !== 200) {
      const reason = await errorBodyReason(res.body);
      const kind: RegistryErrorKind = res.status === 401 || res.status === 403 ? 'unauthorized' : res.status >= 500 ? 'unreachable' : 'protocol';
      const who = creds ? 'refused the credentials given' : 'refused an anonymous token';
      throw this.fail(kind, ep, ctx, `${where} ${who} (HTTP ${res.status}${reason ? `: ${reason}` : ''})`);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse((await readBody(res.body, MAX_TOKEN_RESPONSE)).toString('utf8'));
    } catch (e) {
      if (ctx.signal?.aborted) throw this.fail('unreachable', ep, ctx, `${where}: ${(ctx.signal.reason as Error).message}`);
      throw this.fail('protocol', ep, ctx, `${where}: the answer is not JSON (${(e as Error).message})`);
    }
    const token = typeof body.token === 'string' && body.token ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    if (!token) throw this.fail('protocol', ep, ctx, `${where}: the answer has no token`);
    // Lifetime counted from receipt (issued_at is not used: a skewed server clock would make every token stale).
    this.tokens.set(key, token, typeof body.expires_in === 'number' ? body.expires_in : undefined);
    return token;
  }

  private getToken(realm: URL, ep: Endpoint, ctx: PullContext, service: string | undefined, scopes: string[], username?: string, password?: string): Promise<HttpResponse> {
    const u = new URL(realm);
    if (service) u.searchParams.set('service', service);
    for (const s of scopes) u.searchParams.append('scope', s);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (username !== undefined) headers.authorization = basicAuthorization(username, password ?? '');
    return this.send(u.toString(), ep, { headers, signal: ctx.signal });
  }
}

/** Largest token response read (real ones are a few KiB). */
const MAX_TOKEN_RESPONSE = 256 * 1024;

/** A signal that aborts after `ms` with an ETIMEDOUT error saying `message`; clear() when done. */
function deadlineSignal(ms: number, message: string): { signal: AbortSignal; clear: () => void } {
  const c = new AbortController();
  const timer = ms > 0 ? setTimeout(() => c.abort(Object.assign(new Error(message), { code: 'ETIMEDOUT' })), ms) : undefined;
  timer?.unref();
  return { signal: c.signal, clear: () => clearTimeout(timer) };
}

interface FetchedManifest {
  digest: string;
  bytes: Buffer;
  doc: unknown;
  mediaType: string;
}

function pickDescriptor(d: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (Array.isArray(d.urls) && d.urls.length) out.urls = d.urls.filter((u) => typeof u === 'string');
  if (d.annotations && typeof d.annotations === 'object') out.annotations = d.annotations;
  return out;
}
