/**
 * What can go wrong talking to a registry, as one error type with a kind callers can
 * branch on and a message that names the reference, every endpoint tried and what each
 * answered. It is a CorralError with registry kinds of its own; src/cri/errors.ts maps them
 * to gRPC statuses.
 */
import { CorralError } from '../../errors.js';

export type RegistryErrorKind =
  | 'not-found'
  | 'unauthorized'
  | 'digest-mismatch'
  | 'unsupported-media-type'
  | 'no-matching-platform'
  | 'unreachable'
  | 'stalled'
  | 'protocol';

/** What one endpoint (a mirror or the registry itself) did when asked. */
export interface EndpointFailure {
  /** The endpoint's base URL, e.g. "http://127.0.0.1:5000". */
  endpoint: string;
  mirror: boolean;
  kind: RegistryErrorKind;
  /** Why, without the reference (the error's message adds it). */
  reason: string;
}

export class RegistryError extends CorralError<RegistryErrorKind> {
  /**
   * @param reference the normalised image reference being pulled
   * @param failures per endpoint, in the order tried; the last decides `kind`
   */
  constructor(
    kind: RegistryErrorKind,
    readonly reference: string,
    readonly failures: EndpointFailure[],
    summary?: string,
  ) {
    super(kind, RegistryError.compose(kind, reference, failures, summary));
    this.name = 'RegistryError';
  }

  /** One failure at one endpoint. */
  static at(kind: RegistryErrorKind, reference: string, endpoint: { url: string; mirror: boolean }, reason: string): RegistryError {
    return new RegistryError(kind, reference, [{ endpoint: endpoint.url, mirror: endpoint.mirror, kind, reason }]);
  }

  /** Folds the failures of several endpoints into one error (kind from the last: the registry itself). */
  static combine(reference: string, errors: RegistryError[]): RegistryError {
    const failures = errors.flatMap((e) => e.failures);
    const last = errors[errors.length - 1];
    return new RegistryError(last?.kind ?? 'unreachable', reference, failures);
  }

  private static compose(kind: RegistryErrorKind, reference: string, failures: EndpointFailure[], summary?: string): string {
    const head = `pull ${reference}: ${summary ?? HEADLINE[kind]}`;
    if (failures.length === 0) return head;
    const parts = failures.map((f) => `${f.mirror ? 'mirror ' : ''}${f.endpoint}: ${f.reason}`);
    return `${head} (${parts.join('; ')})`;
  }
}

const HEADLINE: Record<RegistryErrorKind, string> = {
  'not-found': 'not found',
  unauthorized: 'pull access denied: authentication required or credentials rejected',
  'digest-mismatch': 'content does not match its digest',
  'unsupported-media-type': 'unsupported media type',
  'no-matching-platform': 'no manifest for this platform',
  unreachable: 'registry unreachable',
  stalled: 'the pull made no progress or ran out of time',
  protocol: 'unexpected answer from the registry',
};

/** Node network error codes that mean "could not talk to it at all". */
const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'EPIPE', 'ECONNABORTED', 'EADDRNOTAVAIL', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE',
]);

/** Maps a thrown transport error to a kind and a short reason. */
export function describeTransportError(e: unknown): { kind: RegistryErrorKind; reason: string } {
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? '';
  const msg = err?.message ?? String(e);
  if (code === 'ERR_REDIRECT_CROSS_ORIGIN') return { kind: 'protocol', reason: msg };
  if (NETWORK_CODES.has(code)) return { kind: 'unreachable', reason: msg.includes(code) ? msg : `${code}: ${msg}` };
  if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return { kind: 'unreachable', reason: `TLS: ${msg} (check the registry's tls_verify / ca_file settings)` };
  }
  return { kind: 'unreachable', reason: msg };
}
