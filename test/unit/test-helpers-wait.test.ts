import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, waitFor } from '../helpers/wait.js';

test('waitFor returns as soon as the predicate holds, sync or async', async () => {
  let n = 0;
  const t0 = Date.now();
  await waitFor(() => ++n >= 3, { intervalMs: 1 });
  assert.equal(n, 3);
  await waitFor(async () => true);
  assert.ok(Date.now() - t0 < 1_000);
});

test('waitFor times out with what it waited for, and the last error of a throwing predicate', async () => {
  await assert.rejects(waitFor(() => false, { timeoutMs: 30, intervalMs: 5, what: 'the moon to turn blue' }), /timed out after 30 ms waiting for the moon to turn blue$/);
  await assert.rejects(
    waitFor(() => { throw new Error('ENOENT: no pid file'); }, { timeoutMs: 30, intervalMs: 5, what: 'the pid file' }),
    /waiting for the pid file \(last attempt threw: ENOENT: no pid file\)/,
  );
});

test('eventually retries an assertion, returns its value, and on timeout shows the last assertion failure', async () => {
  let n = 0;
  assert.equal(await eventually(() => {
    assert.ok(++n >= 2);
    return 'ok';
  }, { intervalMs: 1 }), 'ok');
  await assert.rejects(
    eventually(() => assert.equal(1 + 1, 3), { timeoutMs: 30, intervalMs: 5, what: 'arithmetic to change' }),
    (e: any) => e.code === 'ERR_ASSERTION' && /still failing after 30 ms waiting for arithmetic to change: /.test(e.message),
  );
});
