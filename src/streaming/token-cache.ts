/**
 * One-time tokens for the streaming URLs (kubelet's request cache): 8 URL-safe characters
 * from a CSPRNG, valid for a minute, consumed by their first use whether or not they have
 * expired, and bounded in number so a caller cannot grow the daemon's memory with them.
 */
import { randomBytes } from 'node:crypto';
import { resourceExhausted } from '../errors.js';

export const TOKEN_TTL_MS = 60_000;
export const MAX_TOKENS = 1000;

export interface ExecRequest {
  kind: 'exec';
  containerId: string;
  cmd: string[];
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

export interface AttachRequest {
  kind: 'attach';
  containerId: string;
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

export interface PortForwardRequest {
  kind: 'portforward';
  podSandboxId: string;
  /** From the CRI request: used by WebSocket clients; SPDY streams name their own port. */
  ports: number[];
}

export type StreamRequest = ExecRequest | AttachRequest | PortForwardRequest;

export class TokenCache {
  /** Insertion order = expiry order (one TTL for all). */
  private readonly entries = new Map<string, { request: StreamRequest; expiresAt: number }>();

  constructor(
    private readonly ttlMs = TOKEN_TTL_MS,
    private readonly maxEntries = MAX_TOKENS,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  insert(request: StreamRequest): string {
    this.collect();
    if (this.entries.size >= this.maxEntries) throw resourceExhausted(`maximum number of in-flight streaming requests exceeded (${this.maxEntries}); unused ones expire after ${this.ttlMs / 1000}s`);
    for (let i = 0; i < 10; i++) {
      const token = randomBytes(6).toString('base64url');
      if (this.entries.has(token)) continue;
      this.entries.set(token, { request, expiresAt: this.now() + this.ttlMs });
      return token;
    }
    throw resourceExhausted('cannot make a unique streaming token');
  }

  /** The request behind a token, once: the token is gone afterwards, used or expired. */
  consume(token: string): StreamRequest | undefined {
    const e = this.entries.get(token);
    if (!e) return undefined;
    this.entries.delete(token);
    return e.expiresAt > this.now() ? e.request : undefined;
  }

  private collect(): void {
    const now = this.now();
    for (const [token, e] of this.entries) {
      if (e.expiresAt > now) break;
      this.entries.delete(token);
    }
  }
}
