/**
 * reopenConmonLog against a FIFO of our own standing in for conmon's control FIFO: the
 * message conmon reads, waiting for the new file, and the failures (no reader, no FIFO,
 * no log directory, a reader that never reopens) answered at once with the right kind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { conmonCtlPath, reopenConmonLog } from '../../src/oci/conmon.js';
import { CorralError } from '../../src/errors.js';

async function withBundle(fn: (b: { bundleDir: string; ctl: string; logPath: string }) => Promise<void>): Promise<void> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-reopen-'));
  try {
    const bundleDir = path.join(base, 'bundle');
    await fs.mkdir(bundleDir);
    await fs.mkdir(path.join(base, 'logs'));
    const ctl = conmonCtlPath(bundleDir);
    execFileSync('mkfifo', [ctl]);
    await fn({ bundleDir, ctl, logPath: path.join(base, 'logs', 'c.log') });
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
}

/** What a non-blocking reader of the FIFO has received so far. */
function drain(fd: number): string {
  const buf = Buffer.alloc(256);
  let out = '';
  for (;;) {
    try {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) return out;
      out += buf.subarray(0, n).toString();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return out;
      throw e;
    }
  }
}

const kind = (k: string, re: RegExp) => (e: unknown) => e instanceof CorralError && e.kind === k && re.test(e.message);

test('no reader on the control FIFO (conmon gone): failed-precondition "not running" at once, no hang', async () => {
  await withBundle(async ({ bundleDir, logPath }) => {
    const t0 = Date.now();
    await assert.rejects(reopenConmonLog({ id: 'c1', bundleDir, conmonPidFile: path.join(bundleDir, 'no-conmon.pid'), logPath }), kind('failed-precondition', /container c1 is not running: its monitor \(conmon\) is gone/));
    assert.ok(Date.now() - t0 < 1000);
  });
});

test('no control FIFO (the bundle is gone): failed-precondition "not running"', async () => {
  await withBundle(async ({ bundleDir, ctl, logPath }) => {
    await fs.rm(ctl);
    await assert.rejects(reopenConmonLog({ id: 'c1', bundleDir, conmonPidFile: path.join(bundleDir, 'no-conmon.pid'), logPath }), kind('failed-precondition', /not running/));
  });
});

test('the log directory is gone: refused naming it, and conmon is not asked (it would exit)', async () => {
  await withBundle(async ({ bundleDir, ctl, logPath }) => {
    const reader = openSync(ctl, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      await fs.rm(path.dirname(logPath), { recursive: true });
      await assert.rejects(reopenConmonLog({ id: 'c1', bundleDir, conmonPidFile: path.join(bundleDir, 'no-conmon.pid'), logPath }), kind('failed-precondition', new RegExp(`log directory ${path.dirname(logPath)} of container c1 does not exist`)));
      assert.equal(drain(reader), '', 'nothing sent to conmon');
    } finally {
      closeSync(reader);
    }
  });
});

test('sends "2 0 0\\n" and resolves only once a new file is at the log path (conmon: <log>.tmp renamed into place)', async () => {
  await withBundle(async ({ bundleDir, ctl, logPath }) => {
    await fs.writeFile(logPath, 'old\n'); // not renamed away: the file in place must be replaced
    const reader = openSync(ctl, constants.O_RDONLY | constants.O_NONBLOCK);
    let reopenedAt = 0;
    const fakeConmon = setInterval(() => {
      if (drain(reader) !== '2 0 0\n') return;
      clearInterval(fakeConmon);
      setTimeout(() => {
        void fs.writeFile(`${logPath}.tmp`, '').then(() => fs.rename(`${logPath}.tmp`, logPath)).then(() => (reopenedAt = Date.now()));
      }, 150);
    }, 5);
    try {
      await reopenConmonLog({ id: 'c1', bundleDir, conmonPidFile: path.join(bundleDir, 'no-conmon.pid'), logPath });
      assert.ok(reopenedAt > 0, 'resolved before the new file was in place');
      assert.equal(await fs.readFile(logPath, 'utf8'), '');
    } finally {
      clearInterval(fakeConmon);
      closeSync(reader);
    }
  });
});

test('a reader that never reopens: an internal error after the timeout, naming the log', async () => {
  await withBundle(async ({ bundleDir, ctl, logPath }) => {
    const reader = openSync(ctl, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      await assert.rejects(reopenConmonLog({ id: 'c1', bundleDir, conmonPidFile: path.join(bundleDir, 'no-conmon.pid'), logPath, timeoutMs: 200 }), kind('internal', /did not reopen its log .*c\.log within 200 ms/));
    } finally {
      closeSync(reader);
    }
  });
});

test('a reader that goes away instead of reopening (conmon exiting): failed-precondition at once, not after the timeout', async () => {
  await withBundle(async ({ bundleDir, ctl, logPath }) => {
    let reader: number | undefined = openSync(ctl, constants.O_RDONLY | constants.O_NONBLOCK);
    const fakeConmon = setInterval(() => {
      if (reader === undefined || drain(reader) === '') return;
      closeSync(reader);
      reader = undefined;
    }, 5);
    try {
      const t0 = Date.now();
      await assert.rejects(reopenConmonLog({ id: 'c1', bundleDir, conmonPidFile: path.join(bundleDir, 'no-conmon.pid'), logPath, timeoutMs: 5000 }), kind('failed-precondition', /monitor \(conmon\) of container c1 exited while reopening its log/));
      assert.ok(Date.now() - t0 < 1000, 'noticed without waiting out the timeout');
    } finally {
      clearInterval(fakeConmon);
      if (reader !== undefined) closeSync(reader);
    }
  });
});
