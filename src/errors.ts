/**
 * Corral's domain errors: what went wrong, as a kind callers (and the CRI facade) can
 * branch on, with a message for the user. No transport here: src/cri/errors.ts alone maps
 * kinds to gRPC statuses, as containerd's facade converts errdefs kinds once.
 */

export type ErrorKind =
  | 'invalid-argument'
  | 'not-found'
  | 'already-exists'
  | 'failed-precondition'
  | 'unavailable'
  | 'internal'
  | 'unimplemented'
  | 'resource-exhausted'
  | 'deadline-exceeded';

/** Every ErrorKind, for code that must cover them all (the facade's mapping and its test). */
export const ERROR_KINDS: readonly ErrorKind[] = [
  'invalid-argument',
  'not-found',
  'already-exists',
  'failed-precondition',
  'unavailable',
  'internal',
  'unimplemented',
  'resource-exhausted',
  'deadline-exceeded',
];

/**
 * An error that knows what kind of failure it is. Subclasses with a vocabulary of their own
 * (RegistryError's 'stalled', 'unauthorized', …) pass their kind type as K; the facade maps
 * those kinds too. Any other Error is unexpected and answers UNKNOWN.
 */
export class CorralError<K extends string = ErrorKind> extends Error {
  constructor(
    readonly kind: K,
    message: string,
  ) {
    super(message);
    this.name = 'CorralError';
  }

  /**
   * The same error (class, kind and fields) with "context: " before its message. A copy:
   * the original may be shared (one failed pull answers every caller waiting on it).
   */
  withContext(context: string): this {
    const copy = Object.assign(Object.create(Object.getPrototypeOf(this) as object) as this, this);
    Object.defineProperty(copy, 'message', { value: `${context}: ${this.message}`, writable: true, configurable: true, enumerable: false });
    Object.defineProperty(copy, 'stack', { value: this.stack, writable: true, configurable: true, enumerable: false });
    return copy;
  }
}

export const invalidArgument = (msg: string) => new CorralError<ErrorKind>('invalid-argument', msg);
export const notFound = (msg: string) => new CorralError<ErrorKind>('not-found', msg);
export const alreadyExists = (msg: string) => new CorralError<ErrorKind>('already-exists', msg);
export const failedPrecondition = (msg: string) => new CorralError<ErrorKind>('failed-precondition', msg);
export const unavailable = (msg: string) => new CorralError<ErrorKind>('unavailable', msg);
export const internalError = (msg: string) => new CorralError<ErrorKind>('internal', msg);
export const unimplemented = (msg: string) => new CorralError<ErrorKind>('unimplemented', msg);
export const resourceExhausted = (msg: string) => new CorralError<ErrorKind>('resource-exhausted', msg);
export const deadlineExceeded = (msg: string) => new CorralError<ErrorKind>('deadline-exceeded', msg);
