/**
 * The HTTP(S) requests the registry client makes, on Node's own http/https: redirects
 * followed (to other hosts too, without the Authorization header; a request body, which
 * may carry a refresh token, is never re-sent to another origin), a timeout for
 * connecting and for every silence of the peer (also while a body streams), an abort
 * signal that tears down the request and its body, and bounded body reads.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';

export interface HttpRequestOptions {
  method?: 'GET' | 'POST' | 'HEAD';
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** The agent for a URL, asked at every hop (it carries that host's TLS settings and connections). */
  agent?: (url: URL) => http.Agent | undefined | Promise<http.Agent | undefined>;
  /** Milliseconds to connect and for any silence afterwards; 0 = none. */
  timeoutMs?: number;
  lookup?: LookupFunction;
  maxRedirects?: number;
  /** Aborts the request, and the response body while it streams, with the signal's reason. */
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The URL that answered (after redirects). */
  url: string;
  /** The body; read it, or discard() it to free the connection. */
  body: IncomingMessage;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export async function httpRequest(url: string, opts: HttpRequestOptions = {}): Promise<HttpResponse> {
  let current = new URL(url);
  let method = opts.method ?? 'GET';
  let body = opts.body;
  let headers = { ...(opts.headers ?? {}) };
  const max = opts.maxRedirects ?? 10;
  for (let hop = 0; ; hop++) {
    const agent = await opts.agent?.(current);
    const res = await requestOnce(current, method, headers, body, agent, opts);
    const location = res.headers.location;
    if (!REDIRECTS.has(res.statusCode ?? 0) || !location) {
      return { status: res.statusCode ?? 0, headers: res.headers, url: current.toString(), body: res };
    }
    discard(res);
    if (hop >= max) throw Object.assign(new Error(`more than ${max} redirects from ${url}`), { code: 'ERR_TOO_MANY_REDIRECTS' });
    const next = new URL(location, current);
    if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new Error(`redirect to unsupported URL scheme ${next.protocol}`);
    if (res.statusCode === 303 || ((res.statusCode === 301 || res.statusCode === 302) && method === 'POST')) {
      method = 'GET';
      body = undefined;
      headers = Object.fromEntries(Object.entries(headers).filter(([k]) => !/^content-(type|length)$/i.test(k)));
    }
    if (next.origin !== current.origin) {
      // A body kept across a 307/308 (an OAuth2 form with a refresh token) would go to a
      // host the credentials are not for: refuse rather than strip it.
      if (body !== undefined) {
        throw Object.assign(new Error(`refused to follow a ${res.statusCode} redirect from ${current.origin} to ${next.origin}: it would re-send the request body (credentials) to another origin`), {
          code: 'ERR_REDIRECT_CROSS_ORIGIN',
        });
      }
      // Credentials are for the registry, never for the storage a blob is redirected to
      // (nor for the same host over plain HTTP: the origin includes the scheme).
      headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'));
    }
    current = next;
  }
}

function requestOnce(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: Buffer | string | undefined,
  agent: http.Agent | undefined,
  opts: HttpRequestOptions,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const signal = opts.signal;
    if (signal?.aborted) return reject(signal.reason);
    const mod = url.protocol === 'https:' ? https : http;
    const h: Record<string, string> = { ...headers };
    if (body !== undefined) h['content-length'] = String(Buffer.byteLength(body));
    const req = mod.request(url, {
      method,
      headers: h,
      agent,
      ...(opts.lookup ? { lookup: opts.lookup } : {}),
    });
    let response: IncomingMessage | undefined;
    const timeoutMs = opts.timeoutMs ?? 0;
    if (timeoutMs > 0) {
      req.setTimeout(timeoutMs, () => {
        const err = Object.assign(new Error(`no answer from ${url.host} for ${Math.round(timeoutMs / 1000)} s`), { code: 'ETIMEDOUT' });
        if (response) response.destroy(err);
        req.destroy(err);
      });
    }
    const onAbort = () => {
      const reason = signal!.reason;
      if (response) response.destroy(reason);
      req.destroy(reason);
    };
    if (signal) {
      signal.addEventListener('abort', onAbort, { once: true });
      // One listener per request on a signal a whole pull shares: drop it when done.
      req.once('close', () => {
        if (!response) signal.removeEventListener('abort', onAbort);
      });
    }
    req.once('error', reject);
    req.once('response', (res) => {
      response = res;
      if (signal) res.once('close', () => signal.removeEventListener('abort', onAbort));
      resolve(res);
    });
    req.end(body);
  });
}

/** Reads a whole body, refusing more than `limit` bytes; onChunk hears each chunk's length. */
export async function readBody(res: IncomingMessage, limit: number, onChunk?: (bytes: number) => void): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    res.destroy();
    throw Object.assign(new Error(`body of ${declared} bytes is larger than the ${limit} allowed`), { code: 'ERR_BODY_TOO_LARGE' });
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) {
      res.destroy();
      throw Object.assign(new Error(`body is larger than the ${limit} bytes allowed`), { code: 'ERR_BODY_TOO_LARGE' });
    }
    chunks.push(chunk);
    onChunk?.(chunk.length);
  }
  return Buffer.concat(chunks);
}

/**
 * Throws a response's body away. Small ones are drained so the connection can be reused,
 * but only for a moment: a peer that trickles them must not keep the socket forever.
 */
export function discard(res: IncomingMessage): void {
  const len = Number(res.headers['content-length']);
  if (Number.isFinite(len) && len <= 64 * 1024) {
    res.on('error', () => undefined);
    const timer = setTimeout(() => res.destroy(), DRAIN_MS);
    timer.unref();
    res.once('close', () => clearTimeout(timer));
    res.resume();
  } else {
    res.destroy();
  }
}

const DRAIN_MS = 2000;

/**
 * A short reason from a registry's JSON error body
 * (`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`), or "".
 */
export async function errorBodyReason(res: IncomingMessage): Promise<string> {
  let text: string;
  try {
    text = (await readBody(res, 16 * 1024)).toString('utf8');
  } catch {
    return '';
  }
  try {
    const doc = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const parts = (doc.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': ')).filter(Boolean);
    if (parts.length) return parts.join('; ');
  } catch {
    // not JSON
  }
  const line = text.trim().split('\n')[0] ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
