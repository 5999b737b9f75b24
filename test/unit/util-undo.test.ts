import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UndoStack } from '../../src/util/undo.js';

test('unwind runs the undos newest first and empties the stack', async () => {
  const undo = new UndoStack();
  const ran: string[] = [];
  for (const step of ['netns', 'files', 'network', 'pause']) undo.push(step, async () => void ran.push(step));
  assert.equal(undo.size, 4);
  assert.deepEqual(await undo.unwind(), []);
  assert.deepEqual(ran, ['pause', 'network', 'files', 'netns']);
  assert.equal(undo.size, 0);
  assert.deepEqual(await undo.unwind(), [], 'a second unwind has nothing left to run');
  assert.deepEqual(ran, ['pause', 'network', 'files', 'netns']);
});

test('a failing undo does not stop the others; every failure is reported with its step', async () => {
  const undo = new UndoStack();
  const ran: string[] = [];
  undo.push('a', async () => void ran.push('a'));
  undo.push('b', async () => {
    ran.push('b');
    throw new Error('b broke');
  });
  undo.push('c', async () => void ran.push('c'));
  undo.push('d', async () => {
    ran.push('d');
    throw 'not an Error'; // eslint-disable-line no-throw-literal
  });
  const failures = await undo.unwind();
  assert.deepEqual(ran, ['d', 'c', 'b', 'a']);
  assert.deepEqual(failures.map((f) => f.step), ['d', 'b']);
  assert.ok(failures.every((f) => f.error instanceof Error), 'thrown non-errors are wrapped');
  assert.equal(failures[0]!.error.message, 'not an Error');
  assert.equal(failures[1]!.error.message, 'b broke');
});

test('each undo is told how many undos before it failed', async () => {
  const undo = new UndoStack();
  const seen: Record<string, number> = {};
  const step = (name: string, fail = false) =>
    undo.push(name, async (failuresSoFar) => {
      seen[name] = failuresSoFar;
      if (fail) throw new Error(name);
    });
  step('forget record'); // bookkeeping: runs last, sees both failures
  step('release name');
  step('remove netns', true);
  step('delete container');
  step('stop pause', true);
  await undo.unwind();
  assert.deepEqual(seen, { 'stop pause': 0, 'delete container': 1, 'remove netns': 1, 'release name': 2, 'forget record': 2 });
});

test('commit forgets every step: a later unwind undoes nothing', async () => {
  const undo = new UndoStack();
  let ran = 0;
  undo.push('a', async () => void ran++);
  undo.push('b', async () => void ran++);
  undo.commit();
  assert.equal(undo.size, 0);
  assert.deepEqual(await undo.unwind(), []);
  assert.equal(ran, 0);
});

test('an undo that hangs is reported as timed out and the ones below it still run', async () => {
  const undo = new UndoStack();
  const ran: string[] = [];
  undo.push('below', async () => void ran.push('below'));
  undo.push('hangs', () => new Promise<void>(() => undefined));
  const t0 = Date.now();
  const failures = await undo.unwind(50);
  assert.ok(Date.now() - t0 < 5_000);
  assert.deepEqual(ran, ['below']);
  assert.equal(failures.length, 1);
  assert.equal(failures[0]!.step, 'hangs');
  assert.match(failures[0]!.error.message, /undo of hangs timed out after 50 ms/);
});
