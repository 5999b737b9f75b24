import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { TokenCache } from '../../src/streaming/token-cache.js';
import { ResizeParser, resizeEvents } from '../../src/streaming/resize.js';
import { errorStreamPayload, statusObject } from '../../src/streaming/status.js';
import { expectedStreams } from '../../src/streaming/remote-command.js';
import { parsePort } from '../../src/streaming/port-forward.js';
import { headerList, negotiateProtocol } from '../../src/streaming/server.js';
import { attachRequest, execRequest, portForwardRequest } from '../../src/streaming/requests.js';
import { CorralError } from '../../src/errors.js';

const exec = { kind: 'exec' as const, containerId: 'c', cmd: ['true'], tty: false, stdin: false, stdout: true, stderr: false };

test('tokens: 8 URL-safe characters, single use, expire after the TTL, bounded in number', () => {
  let now = 1000;
  const cache = new TokenCache(60_000, 3, () => now);
  const t = cache.insert(exec);
  assert.match(t, /^[A-Za-z0-9_-]{8}$/);
  assert.deepEqual(cache.consume(t), exec);
  assert.equal(cache.consume(t), undefined, 'reused');
  const old = cache.insert(exec);
  now += 60_000;
  assert.equal(cache.consume(old), undefined, 'expired');
  assert.equal(cache.size, 0, 'an expired token is gone once presented');
  cache.insert(exec);
  cache.insert(exec);
  cache.insert(exec);
  assert.throws(() => cache.insert(exec), (e: unknown) => e instanceof CorralError && e.kind === 'resource-exhausted');
  now += 60_000;
  cache.insert(exec); // expired ones are collected on insert
  assert.equal(cache.size, 1);
});

test('resize: JSON objects split and coalesced anywhere across chunks, bad ones skipped', () => {
  const p = new ResizeParser();
  const wire = '{"Width":80,"Height":24}\n{"Width":100,"Height":40}\n{"Width":-1,"Height":2}\n{bad}\n{"Width":7,"Height":9}\n';
  const got = [];
  for (const ch of wire) got.push(...p.push(ch));
  assert.deepEqual(got, [{ width: 80, height: 24 }, { width: 100, height: 40 }, { width: 7, height: 9 }]);
  assert.deepEqual(new ResizeParser().push(wire), got);
  assert.deepEqual(new ResizeParser().push('{' + 'x'.repeat(5000) + '}{"Width":1,"Height":2}'), [{ width: 1, height: 2 }]);
});

test('resize events: read at once (never stall the session), iterable to the end', async () => {
  const src = new PassThrough();
  const events = resizeEvents(src);
  src.write('{"Width":80,"Height":24}\n{"Wid');
  src.end('th":90,"Height":30}\n');
  const got = [];
  for await (const e of events) got.push(e);
  assert.deepEqual(got, [{ width: 80, height: 24 }, { width: 90, height: 30 }]);
});

test('status: the exact metav1.Status JSON kubelet writes; v1–v3 only a failure message', () => {
  assert.equal(errorStreamPayload({ kind: 'exited', exitCode: 0 }, 'v4.channel.k8s.io').toString(), '{"metadata":{},"status":"Success"}');
  assert.equal(
    errorStreamPayload({ kind: 'exited', exitCode: 3 }, 'v4.channel.k8s.io').toString(),
    '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}',
  );
  const internal = statusObject({ kind: 'failed', message: 'boom', prefix: 'error executing command in container' }) as any;
  assert.equal(internal.reason, 'InternalError');
  assert.equal(internal.code, 500);
  assert.equal(internal.message, 'Internal error occurred: error executing command in container: boom');
  assert.equal(errorStreamPayload({ kind: 'exited', exitCode: 0 }, 'v2.channel.k8s.io').length, 0);
  assert.equal(errorStreamPayload({ kind: 'exited', exitCode: 137 }, 'v3.channel.k8s.io').toString(), 'command terminated with non-zero exit code: exit status 137');
  assert.equal((statusObject({ kind: 'exited', exitCode: 300 }) as any).details.causes[0].message, '255', 'client-go parses an 8-bit code');
});

test('expected streams come from the CRI request and the protocol', () => {
  assert.deepEqual(expectedStreams({ ...exec, stdin: true, stderr: true }, 'v4.channel.k8s.io'), ['error', 'stdin', 'stdout', 'stderr']);
  assert.deepEqual(expectedStreams({ ...exec, tty: true, stdin: true }, 'v4.channel.k8s.io'), ['error', 'stdin', 'stdout', 'resize']);
  assert.deepEqual(expectedStreams({ ...exec, tty: true }, 'v2.channel.k8s.io'), ['error', 'stdout'], 'no resize before v3');
});

test('protocol negotiation: repeated or comma-joined offers, first client-offered one served', () => {
  assert.deepEqual(headerList('v5.channel.k8s.io, v4.channel.k8s.io,v3.channel.k8s.io'), ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io']);
  const served = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];
  assert.equal(negotiateProtocol(headerList('v5.channel.k8s.io, v4.channel.k8s.io'), served), 'v4.channel.k8s.io');
  assert.equal(negotiateProtocol(['channel.k8s.io', 'v4.channel.k8s.io'], served), 'channel.k8s.io');
  assert.equal(negotiateProtocol(['portforward.k8s.io'], served), undefined);
});

test('port headers: decimal 1..65535 only', () => {
  assert.equal(parsePort('80'), 80);
  assert.equal(parsePort('65535'), 65535);
  for (const bad of [undefined, '', '0', '65536', '-1', '8O', '1e3', ' 80', '999999']) assert.equal(parsePort(bad), undefined, String(bad));
});

test('CRI request validation as kubelet does it, plus a non-empty command', () => {
  const kind = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as CorralError).kind;
    }
    return 'ok';
  };
  assert.deepEqual(execRequest({ containerId: 'c', cmd: ['ls'], stdout: true }), { ...exec, cmd: ['ls'] });
  assert.equal(kind(() => execRequest({ containerId: 'c', cmd: [], stdout: true })), 'invalid-argument');
  assert.equal(kind(() => execRequest({ containerId: 'c', cmd: [''], stdout: true })), 'invalid-argument');
  assert.equal(kind(() => execRequest({ containerId: '', cmd: ['ls'], stdout: true })), 'invalid-argument');
  assert.equal(kind(() => execRequest({ containerId: 'c', cmd: ['ls'] })), 'invalid-argument');
  assert.equal(kind(() => execRequest({ containerId: 'c', cmd: ['ls'], tty: true, stdout: true, stderr: true })), 'invalid-argument');
  assert.equal(kind(() => attachRequest({ containerId: 'c', stdin: true })), 'ok');
  assert.equal(kind(() => attachRequest({ containerId: 'c' })), 'invalid-argument');
  assert.deepEqual(portForwardRequest({ podSandboxId: 'p', port: [80, 443] }), { kind: 'portforward', podSandboxId: 'p', ports: [80, 443] });
  assert.equal(kind(() => portForwardRequest({ podSandboxId: 'p', port: [0] })), 'invalid-argument');
  assert.equal(kind(() => portForwardRequest({ podSandboxId: '' })), 'invalid-argument');
});
