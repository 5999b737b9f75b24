/**
 * Registry authentication: the CRI AuthConfig kubelet sends, the WWW-Authenticate
 * challenges registries answer 401 with, and a cache of bearer tokens.
 *
 * Nothing here logs, and no error message carries a credential or a token.
 */
import { createHash } from 'node:crypto';

/** The CRI AuthConfig (runtime.v1.AuthConfig), as the image RPCs receive it. */
export interface AuthConfig {
  username?: string;
  password?: string;
  /** base64 of "username:password". */
  auth?: string;
  /** When set, the credentials are only offered to this host (the registry or one of its mirrors). */
  serverAddress?: string;
  /** An OAuth2 refresh token, exchanged at the token realm for an access token. */
  identityToken?: string;
  /** A bearer token used as is. */
  registryToken?: string;
}

/** Credentials in the form requests use them. */
export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

/** The usable credentials of an AuthConfig; undefined when it carries none. */
export function resolveCredentials(auth: AuthConfig | undefined | null): Credentials | undefined {
  if (!auth) return undefined;
  const c: Credentials = {};
  if (auth.username) {
    c.username = auth.username;
    c.password = auth.password ?? '';
  } else if (auth.auth) {
    const decoded = Buffer.from(auth.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      c.username = decoded.slice(0, colon);
      c.password = decoded.slice(colon + 1);
    }
  }
  if (auth.identityToken) c.identityToken = auth.identityToken;
  if (auth.registryToken) c.registryToken = auth.registryToken;
  return c.username !== undefined || c.identityToken || c.registryToken ? c : undefined;
}

/** The host[:port] of a serverAddress in any of its spellings ("https://host/v1/", "host"). */
export function serverAddressHost(address: string): string {
  const a = address.trim();
  try {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(a)) return new URL(a).host.toLowerCase();
  } catch {
    // not a URL: take it as host[/path]
  }
  return a.split('/')[0]!.toLowerCase();
}

const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/**
 * Whether an AuthConfig with this serverAddress applies to a pull from `domain`: always
 * when it names no server; else when it names that registry (Docker Hub's aliases agree).
 */
export function authAppliesTo(auth: AuthConfig | undefined | null, domain: string): boolean {
  if (!auth?.serverAddress) return true;
  const host = serverAddressHost(auth.serverAddress);
  const d = domain.toLowerCase();
  return host === d || (DOCKER_HUB_HOSTS.has(host) && DOCKER_HUB_HOSTS.has(d));
}

/**
 * Whether credentials kubelet gave for a pull from `domain` may be sent to `endpoint`
 * (as containerd does): with a serverAddress, only to the host it names (the registry,
 * or a mirror named explicitly); without, only to the registry itself, never to a mirror
 * (a mirror is another party: an operator's cache, not the registry the secret is for).
 * The token realm a permitted endpoint names is handled by the client.
 */
export function credentialsGoTo(auth: AuthConfig | undefined | null, domain: string, endpoint: { host: string; mirror: boolean }): boolean {
  if (!auth) return false;
  if (!auth.serverAddress) return !endpoint.mirror;
  const named = serverAddressHost(auth.serverAddress);
  const host = endpoint.host.toLowerCase();
  if (named === host) return true;
  // The registry itself answers to its reference domain too (docker.io → registry-1.docker.io).
  return !endpoint.mirror && authAppliesTo(auth, domain);
}

/** A stable, non-reversible key for a set of credentials (token cache partitioning). */
export function credentialKey(c: Credentials | undefined): string {
  if (!c) return 'anonymous';
  return createHash('sha256')
    .update(JSON.stringify([c.username ?? '', c.password ?? '', c.identityToken ?? '', c.registryToken ?? '']))
    .digest('hex')
    .slice(0, 16);
}

export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/** One challenge of a WWW-Authenticate header: the scheme (lowercase) and its parameters (keys lowercase). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses WWW-Authenticate (RFC 7235): one or more challenges, each a scheme followed by
 * comma-separated `key=value` or `key="quoted value"` parameters; several headers may
 * come joined by commas or as an array.
 */
export function parseWwwAuthenticate(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (Array.isArray(header)) return header.flatMap((h) => parseWwwAuthenticate(h));
  const s = header;
  const out: Challenge[] = [];
  let i = 0;
  const skipWs = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < s.length && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < s.length) {
    skipWs();
    if (s[i] === ',') {
      i++;
      continue;
    }
    const start = i;
    const word = token();
    if (word === '') {
      i++; // stray character: skip it
      continue;
    }
    skipWs();
    if (s[i] === '=' && current) {
      // A parameter of the current challenge (token68 values like "abc==" are rare in registries; see below).
      i++;
      skipWs();
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++; // closing quote
      } else {
        const vstart = i;
        while (i < s.length && s[i] !== ',' && s[i] !== ' ' && s[i] !== '\t') i++;
        value = s.slice(vstart, i);
      }
      current.params[word.toLowerCase()] = value;
    } else if (s[i] === '=' && !current) {
      // A parameter with no scheme before it: malformed; skip the value.
      while (i < s.length && s[i] !== ',') i++;
    } else {
      current = { scheme: s.slice(start, start + word.length).toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** The `repository:<path>:pull` scope a pull needs. */
export function pullScope(repositoryPath: string): string {
  return `repository:${repositoryPath}:pull`;
}

/** Default lifetime of a token whose response gives no expires_in, per the token spec. */
export const DEFAULT_TOKEN_SECONDS = 60;

/**
 * Bearer tokens by key (endpoint, scope, credentials), valid until their expiry minus a
 * margin for clock skew and request time (10 s, or a tenth of short lifetimes).
 */
export class TokenCache {
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  static key(endpoint: string, scope: string, credentials: string): string {
    return `${endpoint}\n${scope}\n${credentials}`;
  }

  get(key: string): string | undefined {
    const t = this.tokens.get(key);
    if (!t) return undefined;
    if (this.now() >= t.expiresAt) {
      this.tokens.delete(key);
      return undefined;
    }
    return t.token;
  }

  /** @param expiresIn seconds the token is valid for (missing or < 1 → the 60 s default) */
  set(key: string, token: string, expiresIn?: number, issuedAt?: number): void {
    const life = typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn >= 1 ? expiresIn : DEFAULT_TOKEN_SECONDS;
    const margin = Math.min(10, life / 10);
    const now = this.now();
    const start = typeof issuedAt === 'number' && Number.isFinite(issuedAt) && issuedAt <= now ? issuedAt : now;
    this.tokens.set(key, { token, expiresAt: start + (life - margin) * 1000 });
  }

  delete(key: string): void {
    this.tokens.delete(key);
  }

  get size(): number {
    return this.tokens.size;
  }
}
