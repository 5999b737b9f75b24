import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { grpcCode } from '../../src/cri/errors.js';
import { IdIndex, generateId } from '../../src/store/ids.js';
import { NameRegistry, sandboxName } from '../../src/store/names.js';

test('generated IDs are 64 lowercase hex characters and distinct', () => {
  const ids = new Set(Array.from({ length: 1000 }, generateId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^[0-9a-f]{64}$/);
});

test('IdIndex resolves unique prefixes, reports ambiguity and absence', () => {
  const idx = new IdIndex();
  const a = 'abc1' + '0'.repeat(60);
  const b = 'abc2' + '0'.repeat(60);
  const c = 'def0' + '0'.repeat(60);
  [b, c, a].forEach((id) => idx.add(id));
  assert.equal(idx.resolve('abc1'), a);
  assert.equal(idx.resolve('d'), c);
  assert.equal(idx.resolve(b), b);
  assert.throws(() => idx.resolve('abc'), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT && /ambiguous: it matches 2 IDs/.test(e.message));
  assert.throws(() => idx.resolve('ff'), (e: any) => grpcCode(e) === status.NOT_FOUND);
  assert.equal(idx.tryResolve('ff'), undefined);
  assert.throws(() => idx.resolve(''), (e: any) => grpcCode(e) === status.INVALID_ARGUMENT);
  idx.delete(a);
  assert.equal(idx.resolve('abc'), b);
  assert.deepEqual([...idx.all()], [b, c]);
});

test('IdIndex: a full ID that is a prefix of nothing else resolves even among many', () => {
  const idx = new IdIndex();
  const ids = Array.from({ length: 200 }, generateId);
  ids.forEach((id) => idx.add(id));
  for (const id of ids) assert.equal(idx.resolve(id.slice(0, 12)), id);
});

test('NameRegistry: one owner per name, retries see the creation, release frees only its own', async () => {
  const names = new NameRegistry();
  const key = sandboxName({ name: 'web', namespace: 'default', uid: 'u1', attempt: 0 });
  assert.equal(key, 'web_default_u1_0');
  const creation = Promise.resolve('id-1');
  assert.equal(names.reserve(key, 'id-1', creation), undefined);
  const taken = names.reserve(key, 'id-2');
  assert.equal(taken?.id, 'id-1');
  assert.equal(await taken?.creation, 'id-1');
  names.settle(key, 'id-1');
  assert.equal(names.get(key)?.creation, undefined);
  names.release(key, 'id-2');
  assert.equal(names.get(key)?.id, 'id-1');
  names.release(key, 'id-1');
  assert.equal(names.get(key), undefined);
});
