import { status as GrpcStatus } from '@grpc/grpc-js';

/** An error that knows which gRPC status it answers with. */
export class CriError extends Error {
  constructor(readonly code: GrpcStatus, message: string) {
    super(message);
    this.name = 'CriError';
  }
}

export const invalidArgument = (msg: string) => new CriError(GrpcStatus.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new CriError(GrpcStatus.NOT_FOUND, msg);
export const alreadyExists = (msg: string) => new CriError(GrpcStatus.ALREADY_EXISTS, msg);
export const failedPrecondition = (msg: string) => new CriError(GrpcStatus.FAILED_PRECONDITION, msg);
export const unavailable = (msg: string) => new CriError(GrpcStatus.UNAVAILABLE, msg);
export const internalError = (msg: string) => new CriError(GrpcStatus.INTERNAL, msg);
export const unimplemented = (msg: string) => new CriError(GrpcStatus.UNIMPLEMENTED, msg);
export const resourceExhausted = (msg: string) => new CriError(GrpcStatus.RESOURCE_EXHAUSTED, msg);
export const deadlineExceeded = (msg: string) => new CriError(GrpcStatus.DEADLINE_EXCEEDED, msg);
