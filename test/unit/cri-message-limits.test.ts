import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_REQUEST_ELEMENTS, countWireElements } from '../../src/cri/message-limits.js';
import { encodeMessage, messageType } from '../../src/cri/proto.js';

const count = (name: string, value: object, limit = Infinity) => countWireElements(messageType(name), encodeMessage(name, value), limit);

test('counts every field occurrence, nested messages and map entries included', () => {
  assert.equal(count('VersionRequest', {}), 0);
  assert.equal(count('VersionRequest', { version: 'v1' }), 1);
  // podSandboxId, config, config.metadata, metadata.name, 3 envs × (entry, key, value)
  assert.equal(count('CreateContainerRequest', {
    podSandboxId: 'p', config: { metadata: { name: 'c' }, envs: [{ key: 'a', value: 'MQ==' }, { key: 'b', value: 'Mg==' }, { key: 'c', value: 'Mw==' }] },
  }), 4 + 9);
  // map<string,string> labels: entry + key + value each
  assert.equal(count('PodSandboxConfig', { labels: { a: '1', b: '2' } }), 6);
  // Empty repeated messages count one each: the amplification this guards against.
  assert.equal(count('CreateContainerRequest', { config: { mounts: Array.from({ length: 1000 }, () => ({})) } }), 1 + 1000);
});

test('stops as soon as the limit is passed, without walking the rest', () => {
  const bytes = encodeMessage('CreateContainerRequest', { config: { mounts: Array.from({ length: 1_000_000 }, () => ({})) } });
  const t0 = performance.now();
  const n = countWireElements(messageType('CreateContainerRequest'), bytes, MAX_REQUEST_ELEMENTS);
  assert.equal(n, MAX_REQUEST_ELEMENTS + 1);
  assert.ok(performance.now() - t0 < 1000);
  assert.ok(count('CreateContainerRequest', { config: { mounts: Array.from({ length: 10 }, () => ({})) } }, MAX_REQUEST_ELEMENTS) <= MAX_REQUEST_ELEMENTS);
});

test('packed numbers count one per number', () => {
  // LinuxContainerSecurityContext.supplemental_groups is repeated int64 (packed in proto3).
  const n = count('LinuxContainerSecurityContext', { supplementalGroups: Array.from({ length: 5000 }, (_, i) => i % 100) });
  assert.ok(n >= 5000 && n <= 5001 + 5000, String(n));
});

test('malformed or hostile wire data ends the walk without throwing', () => {
  const t = messageType('CreateContainerRequest');
  for (const hex of ['ff', 'ffffffffffffffffffffff', '12ffffffff0f', '1205', '0f', '1a02', '0b0b0b0b0c0c']) {
    assert.doesNotThrow(() => countWireElements(t, Buffer.from(hex, 'hex'), 100), hex);
  }
  // Deep nesting of unknown groups: no recursion, no stack overflow.
  const deep = Buffer.alloc(2_000_000, 0x0b); // start-group of field 1, a million times
  assert.equal(countWireElements(t, deep, 10), 11);
  assert.equal(countWireElements(t, deep, Infinity), deep.length);
});
