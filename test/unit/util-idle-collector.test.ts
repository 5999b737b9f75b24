/** IdleCollector: one collection after the last burst of work settles, none in the middle of one, none without gc. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { IdleCollector } from '../../src/util/idle-collector.js';

test('several pulls ending close together: one collection, settleMs after the last', async () => {
  let collections = 0;
  const c = new IdleCollector(() => collections++, 400);
  c.settled();
  await sleep(100);
  c.settled();
  await sleep(100);
  c.settled();
  await sleep(100);
  assert.equal(collections, 0, 'the wait restarts at each settled()');
  await sleep(600);
  assert.equal(collections, 1);
  await sleep(500);
  assert.equal(collections, 1, 'once per quiet spell');
  c.settled();
  await sleep(600);
  assert.equal(collections, 2, 'the next burst gets its own');
});

test('work that starts again before the wait is over: no collection in the middle of it', async () => {
  let collections = 0;
  const c = new IdleCollector(() => collections++, 50);
  c.settled();
  c.busy();
  await sleep(120);
  assert.equal(collections, 0);
});

test('without gc (no --expose-gc) it does nothing and keeps no timer', async () => {
  const c = new IdleCollector(undefined, 10);
  c.settled();
  assert.equal((c as unknown as { timer?: unknown }).timer, undefined);
});
