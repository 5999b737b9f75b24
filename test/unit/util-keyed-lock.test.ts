import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedLock } from '../../src/util/keyed-lock.js';

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
