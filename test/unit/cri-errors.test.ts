import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { grpcCode, toGrpcStatus } from '../../src/cri/errors.js';
import {
  CorralError,
  ERROR_KINDS,
  alreadyExists,
  deadlineExceeded,
  failedPrecondition,
  internalError,
  invalidArgument,
  notFound,
  resourceExhausted,
  unavailable,
  unimplemented,
  type ErrorKind,
} from '../../src/errors.js';
import { RegistryError, type RegistryErrorKind } from '../../src/image/registry/errors.js';
import { InvalidReferenceError } from '../../src/image/reference.js';
import { LayerRefusedError } from '../../src/image/unpack.js';

const KIND_STATUS: Record<ErrorKind, status> = {
  'invalid-argument': status.INVALID_ARGUMENT,
  'not-found': status.NOT_FOUND,
  'already-exists': status.ALREADY_EXISTS,
  'failed-precondition': status.FAILED_PRECONDITION,
  unavailable: status.UNAVAILABLE,
  internal: status.INTERNAL,
  unimplemented: status.UNIMPLEMENTED,
  'resource-exhausted': status.RESOURCE_EXHAUSTED,
  'deadline-exceeded': status.DEADLINE_EXCEEDED,
};

test('every domain error kind maps to its gRPC status, none to UNKNOWN', () => {
  assert.deepEqual([...ERROR_KINDS].sort(), Object.keys(KIND_STATUS).sort());
  for (const kind of ERROR_KINDS) {
    const e = new CorralError(kind, `a ${kind} failure`);
    assert.deepEqual(toGrpcStatus(e), { code: KIND_STATUS[kind], details: `a ${kind} failure` }, kind);
    assert.notEqual(grpcCode(e), status.UNKNOWN, kind);
  }
});

test('the helpers answer with the status their name says', () => {
  const cases: [CorralError, status][] = [
    [invalidArgument('m'), status.INVALID_ARGUMENT],
    [notFound('m'), status.NOT_FOUND],
    [alreadyExists('m'), status.ALREADY_EXISTS],
    [failedPrecondition('m'), status.FAILED_PRECONDITION],
    [unavailable('m'), status.UNAVAILABLE],
    [internalError('m'), status.INTERNAL],
    [unimplemented('m'), status.UNIMPLEMENTED],
    [resourceExhausted('m'), status.RESOURCE_EXHAUSTED],
    [deadlineExceeded('m'), status.DEADLINE_EXCEEDED],
  ];
  for (const [e, code] of cases) assert.equal(grpcCode(e), code, `${e.kind} -> ${status[code]}`);
});

test('domain error subclasses keep their status: refused layers and references, every registry kind', () => {
  assert.equal(grpcCode(new LayerRefusedError('../x', 'escape')), status.INVALID_ARGUMENT);
  assert.equal(grpcCode(new InvalidReferenceError('UPPER', 'uppercase')), status.INVALID_ARGUMENT);
  const registry: Record<RegistryErrorKind, status> = {
    'not-found': status.NOT_FOUND,
    unauthorized: status.UNAUTHENTICATED,
    'digest-mismatch': status.DATA_LOSS,
    'unsupported-media-type': status.FAILED_PRECONDITION,
    'no-matching-platform': status.NOT_FOUND,
    unreachable: status.UNAVAILABLE,
    stalled: status.DEADLINE_EXCEEDED,
    protocol: status.UNKNOWN,
  };
  for (const [kind, code] of Object.entries(registry) as [RegistryErrorKind, status][]) {
    const e = RegistryError.at(kind, 'docker.io/library/busybox:latest', { url: 'http://127.0.0.1:1', mirror: false }, 'why');
    assert.deepEqual(toGrpcStatus(e), { code, details: e.message }, kind);
  }
});

test('anything else is UNKNOWN with its message', () => {
  assert.deepEqual(toGrpcStatus(new Error('disk on fire')), { code: status.UNKNOWN, details: 'disk on fire' });
  assert.deepEqual(toGrpcStatus(new TypeError('x is undefined')), { code: status.UNKNOWN, details: 'x is undefined' });
  assert.deepEqual(toGrpcStatus('a string'), { code: status.UNKNOWN, details: 'a string' });
  assert.deepEqual(toGrpcStatus(new Error('')), { code: status.UNKNOWN, details: 'unknown error' });
  // A kind the facade does not know is not silently given some other status.
  assert.equal(grpcCode(new CorralError('no-such-kind', 'm')), status.UNKNOWN);
});

test('withContext prefixes the message of a copy that keeps class, kind and fields', () => {
  const original = RegistryError.at('stalled', 'registry.k8s.io/pause:3.9', { url: 'https://registry.k8s.io', mirror: false }, 'no progress');
  const wrapped = original.withContext('sandbox image registry.k8s.io/pause:3.9');
  assert.ok(wrapped instanceof RegistryError);
  assert.equal(wrapped.kind, 'stalled');
  assert.equal(wrapped.name, 'RegistryError');
  assert.deepEqual(wrapped.failures, original.failures);
  assert.equal(wrapped.message, `sandbox image registry.k8s.io/pause:3.9: ${original.message}`);
  assert.equal(grpcCode(wrapped), status.DEADLINE_EXCEEDED);
  assert.ok(!original.message.startsWith('sandbox image'), 'the shared original is untouched');
  const plain = invalidArgument('bad').withContext('ctx');
  assert.deepEqual(toGrpcStatus(plain), { code: status.INVALID_ARGUMENT, details: 'ctx: bad' });
});
