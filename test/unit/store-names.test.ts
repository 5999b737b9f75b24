import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NameRegistry, containerName, containerNameKey, sandboxName, sandboxNameKey } from '../../src/store/names.js';

test('reserve: the first reserver gets the name, later ones get its reservation back', () => {
  const names = new NameRegistry();
  assert.equal(names.reserve('pod', 'id1'), undefined);
  assert.deepEqual(names.reserve('pod', 'id2'), { id: 'id1' });
  assert.equal(names.get('pod')!.id, 'id1');
  assert.equal(names.size(), 1);
  assert.equal(names.reserve('other', 'id2'), undefined);
  assert.equal(names.size(), 2);
});

test('a joiner during a creation gets the creation to wait on; after settle it gets the ID at once', async () => {
  const names = new NameRegistry();
  let finish!: (id: string) => void;
  const creation = new Promise<string>((r) => (finish = r));
  assert.equal(names.reserve('pod', 'id1', creation), undefined);
  const joiner = names.reserve('pod', 'id2', Promise.resolve('id2'));
  assert.equal(joiner!.id, 'id1');
  assert.equal(joiner!.creation, creation, 'the retry waits for the same creation');
  finish('id1');
  assert.equal(await joiner!.creation, 'id1');
  names.settle('pod', 'id1');
  assert.deepEqual(names.get('pod'), { id: 'id1' });
  assert.equal(names.reserve('pod', 'id3')!.creation, undefined, 'nothing left to wait for');
});

test('settle and release act only for the ID that holds the name', () => {
  const names = new NameRegistry();
  const creation = Promise.resolve('id1');
  names.reserve('pod', 'id1', creation);
  names.settle('pod', 'stale');
  assert.equal(names.get('pod')!.creation, creation, 'a stale settle leaves the creation');
  names.release('pod', 'stale');
  assert.equal(names.get('pod')!.id, 'id1', 'a stale release does not free the name');
  names.release('pod', 'id1');
  assert.equal(names.get('pod'), undefined);
  assert.equal(names.size(), 0);
  names.settle('pod', 'id1');
  assert.equal(names.get('pod'), undefined, 'settling a freed name does not bring it back');
  assert.equal(names.reserve('pod', 'id2'), undefined, 'the freed name can be taken again');
});

test('structured keys: fields containing "_" never collide, though the displayed names do', () => {
  const a = { name: 'a_b', namespace: 'c', uid: 'u', attempt: 0 };
  const b = { name: 'a', namespace: 'b_c', uid: 'u', attempt: 0 };
  assert.equal(sandboxName(a), sandboxName(b), 'the displayed names are ambiguous');
  assert.notEqual(sandboxNameKey(a), sandboxNameKey(b));
  assert.equal(sandboxNameKey({ ...a, attempt: '1' as unknown as number }), sandboxNameKey({ ...a, attempt: 1 }), 'attempt compared as a number');
  assert.notEqual(sandboxNameKey({ ...a, attempt: 1 }), sandboxNameKey(a));

  const pod = { name: 'p', namespace: 'ns', uid: 'u' };
  assert.equal(containerName('x_p', { ...pod, name: 'y' }, 0), containerName('x', { ...pod, name: 'p_y' }, 0));
  assert.notEqual(containerNameKey('x_p', { ...pod, name: 'y' }, 0), containerNameKey('x', { ...pod, name: 'p_y' }, 0));
  assert.equal(containerName('c', pod, 2), 'c_p_ns_u_2');
  // A sandbox and a container with the same fields never share a key.
  assert.notEqual(sandboxNameKey({ name: 'c', namespace: 'p', uid: 'ns', attempt: 0 }), containerNameKey('c', { name: 'p', namespace: 'ns', uid: '' }, 0));

  const names = new NameRegistry();
  assert.equal(names.reserve(sandboxNameKey(a), 'id1'), undefined);
  assert.equal(names.reserve(sandboxNameKey(b), 'id2'), undefined, 'both pods get their name');
});
