import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedLock, SharedExclusiveLock } from '../../src/util/keyed-lock.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('operations on one key run one after another; other keys run alongside; a failure does not block the next', async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  const op = (key: string, name: string, ms: number, fail = false) =>
    lock.run(key, async () => {
      log.push(`${name}+`);
      await tick(ms);
      log.push(`${name}-`);
      if (fail) throw new Error(name);
      return name;
    });
  const a1 = op('a', 'a1', 30, true);
  const a2 = op('a', 'a2', 5);
  const b1 = op('b', 'b1', 5);
  await assert.rejects(a1, /a1/);
  assert.equal(await a2, 'a2');
  assert.equal(await b1, 'b1');
  assert.ok(log.indexOf('a2+') > log.indexOf('a1-'), 'a2 waited for a1');
  assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), 'b1 did not wait for a1');
});

test('KeyedLock runs waiters in arrival order and forgets a key once idle', async () => {
  const lock = new KeyedLock();
  const order: number[] = [];
  const runs = [0, 1, 2, 3, 4].map((i) => lock.run('k', async () => {
    await tick(5 - i); // later ones are quicker: only the lock keeps the order
    order.push(i);
  }));
  assert.equal(lock.busy('k'), true);
  assert.equal(lock.busy('other'), false);
  await Promise.all(runs);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  assert.equal(lock.busy('k'), false, 'an idle key is dropped (no unbounded map)');
  await assert.rejects(lock.run('k', async () => { throw new Error('x'); }), /x/);
  assert.equal(lock.busy('k'), false, 'also after a failure');
});

test('KeyedLock: a synchronous throw in fn rejects that call only', async () => {
  const lock = new KeyedLock();
  await assert.rejects(lock.run('k', (() => { throw new Error('sync'); }) as () => Promise<void>), /sync/);
  assert.equal(await lock.run('k', async () => 'next'), 'next');
  assert.equal(lock.busy('k'), false);
});

/** A held lock: resolves `entered` when fn starts and waits for release(). */
function holder(lock: SharedExclusiveLock, mode: 'shared' | 'exclusive', key: string, log: string[], name: string) {
  let release!: () => void;
  let entered!: () => void;
  const started = new Promise<void>((r) => (entered = r));
  const gate = new Promise<void>((r) => (release = r));
  const done = lock[mode](key, async () => {
    log.push(`${name}+`);
    entered();
    await gate;
    log.push(`${name}-`);
    return name;
  });
  return { started, release, done };
}

test('SharedExclusiveLock: shared holders run together; exclusive waits for them and runs alone', async () => {
  const lock = new SharedExclusiveLock();
  const log: string[] = [];
  const r1 = holder(lock, 'shared', 'pod', log, 'r1');
  const r2 = holder(lock, 'shared', 'pod', log, 'r2');
  await Promise.all([r1.started, r2.started]);
  const w = holder(lock, 'exclusive', 'pod', log, 'w');
  const other = holder(lock, 'exclusive', 'other-pod', log, 'o');
  await other.started; // another key is not blocked
  await tick(10);
  assert.deepEqual(log, ['r1+', 'r2+', 'o+'], 'the exclusive holder waits for both shared ones');
  r1.release();
  await r1.done;
  await tick(10);
  assert.equal(log.includes('w+'), false, 'still one shared holder');
  r2.release();
  await w.started;
  w.release();
  other.release();
  assert.deepEqual(await Promise.all([w.done, other.done]), ['w', 'o']);
  assert.equal(lock.busy('pod'), false);
  assert.equal(lock.busy('other-pod'), false);
});

test('SharedExclusiveLock is fair: a shared request behind a waiting exclusive one waits its turn', async () => {
  const lock = new SharedExclusiveLock();
  const log: string[] = [];
  const r1 = holder(lock, 'shared', 'k', log, 'r1');
  await r1.started;
  const w = holder(lock, 'exclusive', 'k', log, 'w');
  const r2 = holder(lock, 'shared', 'k', log, 'r2'); // would starve w if it joined r1
  await tick(10);
  assert.deepEqual(log, ['r1+'], 'r2 queued behind the waiting exclusive holder');
  r1.release();
  await w.started;
  await tick(10);
  assert.deepEqual(log, ['r1+', 'r1-', 'w+'], 'r2 waits for the exclusive holder to finish');
  w.release();
  await r2.started;
  r2.release();
  await Promise.all([r1.done, w.done, r2.done]);
  assert.deepEqual(log, ['r1+', 'r1-', 'w+', 'w-', 'r2+', 'r2-']);
  assert.equal(lock.busy('k'), false);
});

test('SharedExclusiveLock: a failing holder releases like a successful one', async () => {
  const lock = new SharedExclusiveLock();
  await assert.rejects(lock.exclusive('k', async () => { throw new Error('boom'); }), /boom/);
  await assert.rejects(lock.shared('k', async () => { throw new Error('boom2'); }), /boom2/);
  assert.equal(lock.busy('k'), false);
  assert.equal(await lock.exclusive('k', async () => 'after'), 'after');
  assert.equal(lock.busy('k'), false);
});
