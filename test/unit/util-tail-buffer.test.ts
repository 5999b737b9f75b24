import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TailBuffer } from '../../src/util/tail-buffer.js';

/** What a TailBuffer must hold: the last `cap` bytes of everything pushed. */
function feed(cap: number, chunks: Buffer[]) {
  const t = new TailBuffer(cap);
  for (const c of chunks) t.push(c);
  const all = Buffer.concat(chunks);
  return { t, want: all.subarray(Math.max(0, all.length - cap)), total: all.length };
}

test('under the cap everything is kept, in order', () => {
  const { t, want, total } = feed(100, [Buffer.from('hello '), Buffer.from('world')]);
  assert.deepEqual(t.toBuffer(), want);
  assert.equal(t.total, total);
  assert.equal(t.dropped, 0);
});

test('over the cap only the tail is kept, whatever the chunking', () => {
  for (const cap of [1, 7, 4096, 65536, 65537, 200_000]) {
    for (const sizes of [[1], [3, 5, 11], [cap - 1, 2], [cap], [cap + 1], [cap * 3 + 5, 1, cap - 2], [70_000, 70_000, 70_000, 10]]) {
      const chunks: Buffer[] = [];
      for (let round = 0; round < 5; round++) for (const s of sizes) chunks.push(randomBytes(Math.max(0, s)));
      const { t, want, total } = feed(cap, chunks);
      assert.deepEqual(t.toBuffer(), want, `cap ${cap}, chunks ${sizes}`);
      assert.equal(t.dropped, total - want.length);
    }
  }
});

test('a flood of one-byte chunks keeps exactly the last cap bytes and never holds more', () => {
  const t = new TailBuffer(1000);
  for (let i = 0; i < 100_000; i++) t.push(Buffer.from([i % 251]));
  const got = t.toBuffer();
  assert.equal(got.length, 1000);
  for (let k = 0; k < 1000; k++) assert.equal(got[k], (99_000 + k) % 251);
  assert.equal(t.dropped, 99_000);
});

test('a zero cap keeps nothing and counts everything; a bad cap is refused', () => {
  const t = new TailBuffer(0);
  t.push(Buffer.from('abc'));
  assert.deepEqual([t.toBuffer().length, t.total, t.dropped], [0, 3, 3]);
  assert.throws(() => new TailBuffer(-1), RangeError);
  assert.throws(() => new TailBuffer(1.5), RangeError);
});
