import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventHub } from '../../src/events/hub.js';
import { CorralError } from '../../src/errors.js';

const hub = (queueLimit = 8, maxSubscribers = 16) => new EventHub<number>({ queueLimit, maxSubscribers });

async function take<T>(it: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

test('a subscriber sees every event published after it subscribed, in order', async () => {
  const h = hub();
  h.publish(0); // before: not seen
  const sub = h.subscribe();
  for (let i = 1; i <= 5; i++) h.publish(i);
  assert.deepEqual(await take(sub, 5), [1, 2, 3, 4, 5]);
  // a reader waiting before the event gets it too
  const waiting = sub.next();
  h.publish(6);
  assert.deepEqual(await waiting, { value: 6, done: false });
});

test('many subscribers each get the whole sequence, reading at their own pace', async () => {
  const h = hub(100, 50);
  const subs = Array.from({ length: 20 }, () => h.subscribe());
  assert.equal(h.subscriberCount, 20);
  const reads = subs.map((s, i) => (async () => {
    const got: number[] = [];
    for await (const e of s) {
      got.push(e);
      if (i % 3 === 0) await new Promise((r) => setImmediate(r)); // some slower than others
      if (got.length === 50) break;
    }
    return got;
  })());
  for (let i = 0; i < 50; i++) h.publish(i);
  const expected = Array.from({ length: 50 }, (_, i) => i);
  for (const got of await Promise.all(reads)) assert.deepEqual(got, expected);
  // `break` unsubscribed every one of them
  assert.equal(h.subscriberCount, 0);
});

test('a subscriber that stops reading is dropped once its queue is full; the publisher never waits and the others go on', async () => {
  const h = hub(16);
  const stuck = h.subscribe();
  const live = h.subscribe();
  const seen: number[] = [];
  const reading = (async () => {
    for await (const e of live) {
      seen.push(e);
      if (seen.length === 1000) break;
    }
  })();
  // publish() is synchronous: it cannot wait for anyone. 1000 events with a reader that never reads.
  for (let i = 0; i < 1000; i++) {
    h.publish(i);
    if (i % 10 === 0) await new Promise((r) => setImmediate(r)); // let the live reader read
  }
  assert.equal(stuck.closeReason, 'overflow');
  assert.equal(await stuck.closed, 'overflow');
  assert.equal(stuck.pending, 0, 'the dropped subscriber holds no events');
  assert.equal(h.subscriberCount, 1, 'the dropped subscriber is detached from the hub');
  // what it had queued is gone: its reader learns it missed events (done, reason overflow)
  assert.deepEqual(await stuck.next(), { value: undefined, done: true });
  await reading;
  assert.deepEqual(seen, Array.from({ length: 1000 }, (_, i) => i));
});

test('a queue holds exactly queueLimit events; one more drops the subscriber', () => {
  const h = hub(3);
  const sub = h.subscribe();
  for (let i = 0; i < 3; i++) h.publish(i);
  assert.equal(sub.closeReason, undefined);
  assert.equal(sub.pending, 3);
  h.publish(3);
  assert.equal(sub.closeReason, 'overflow');
});

test('unsubscribing detaches at once, wakes a waiting reader, and is idempotent', async () => {
  const h = hub();
  const sub = h.subscribe();
  const waiting = sub.next();
  sub.close();
  sub.close();
  assert.deepEqual(await waiting, { value: undefined, done: true });
  assert.equal(sub.closeReason, 'unsubscribed');
  assert.equal(h.subscriberCount, 0);
  h.publish(1); // nobody to deliver to: nothing held
  assert.equal(sub.pending, 0);
});

test('subscribers are capped, and close() ends every subscription and refuses new ones', async () => {
  const h = hub(8, 2);
  const a = h.subscribe();
  h.subscribe();
  assert.throws(() => h.subscribe(), (e: unknown) => e instanceof CorralError && e.kind === 'resource-exhausted' && /at most 2/.test(e.message));
  a.close();
  const c = h.subscribe(); // a freed slot is usable again
  h.close();
  assert.equal(await c.closed, 'shutdown');
  assert.equal(h.subscriberCount, 0);
  assert.throws(() => h.subscribe(), (e: unknown) => e instanceof CorralError && e.kind === 'resource-exhausted');
});
