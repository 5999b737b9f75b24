/**
 * Where Corral's errors become gRPC statuses: the one place that knows both. The domain
 * throws CorralErrors (src/errors.ts) with a kind; RegistryError has registry kinds of
 * its own. Any other error was not a chosen answer and is UNKNOWN.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { CorralError, type ErrorKind } from '../errors.js';
import { RegistryError, type RegistryErrorKind } from '../image/registry/errors.js';

const KIND_STATUS: Record<ErrorKind, GrpcStatus> = {
  'invalid-argument': GrpcStatus.INVALID_ARGUMENT,
  'not-found': GrpcStatus.NOT_FOUND,
  'already-exists': GrpcStatus.ALREADY_EXISTS,
  'failed-precondition': GrpcStatus.FAILED_PRECONDITION,
  unavailable: GrpcStatus.UNAVAILABLE,
  internal: GrpcStatus.INTERNAL,
  unimplemented: GrpcStatus.UNIMPLEMENTED,
  'resource-exhausted': GrpcStatus.RESOURCE_EXHAUSTED,
  'deadline-exceeded': GrpcStatus.DEADLINE_EXCEEDED,
};

const REGISTRY_STATUS: Record<RegistryErrorKind, GrpcStatus> = {
  'not-found': GrpcStatus.NOT_FOUND,
  unauthorized: GrpcStatus.UNAUTHENTICATED,
  'digest-mismatch': GrpcStatus.DATA_LOSS,
  'unsupported-media-type': GrpcStatus.FAILED_PRECONDITION,
  'no-matching-platform': GrpcStatus.NOT_FOUND,
  unreachable: GrpcStatus.UNAVAILABLE,
  stalled: GrpcStatus.DEADLINE_EXCEEDED,
  protocol: GrpcStatus.UNKNOWN,
};

/** The gRPC status code `err` answers with. */
export function grpcCode(err: unknown): GrpcStatus {
  if (err instanceof RegistryError) return REGISTRY_STATUS[err.kind] ?? GrpcStatus.UNKNOWN;
  if (err instanceof CorralError && Object.hasOwn(KIND_STATUS, err.kind)) return KIND_STATUS[err.kind as ErrorKind];
  return GrpcStatus.UNKNOWN;
}

/** The status a handler's failure answers with: its code and message. */
export function toGrpcStatus(err: unknown): { code: GrpcStatus; details: string } {
  if (err instanceof CorralError) return { code: grpcCode(err), details: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: GrpcStatus.UNKNOWN, details: message || 'unknown error' };
}
