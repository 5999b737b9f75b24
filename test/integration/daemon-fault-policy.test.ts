import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { TestDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';

const injector = pathToFileURL(fileURLToPath(new URL('../helpers/fault-injector.js', import.meta.url))).href;

/** Starts a daemon whose process preloads the test fault injector (only the child sees these variables). */
async function startWithInjector(fault: 'reject' | 'throw'): Promise<TestDaemon> {
  const d = new TestDaemon({ conflist: null });
  const saved = { NODE_OPTIONS: process.env.NODE_OPTIONS, CORRAL_TEST_FAULT: process.env.CORRAL_TEST_FAULT };
  process.env.NODE_OPTIONS = `${saved.NODE_OPTIONS ?? ''} --import=${injector}`.trim();
  process.env.CORRAL_TEST_FAULT = fault;
  try {
    await d.start();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  return d;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('unhandled rejections in the daemon are logged with their stack and it keeps answering', async () => {
  const d = await startWithInjector('reject');
  try {
    const pid = d.pid!;
    const rejectionsLogged = async () => (await d.logLines()).filter((l) => /unhandled promise rejection/.test(l.msg ?? '')).length;
    for (let i = 1; i <= 3; i++) {
      process.kill(pid, 'SIGUSR2');
      // One signal at a time: two pending SIGUSR2 would merge into one.
      await waitFor(async () => (await rejectionsLogged()) >= i, { what: `unhandled rejection ${i} to be logged` });
    }
    assert.ok(alive(pid), `the daemon is alive:\n${await d.logTail()}`);
    const v = await d.rpc('Version', {}, 5000);
    assert.equal(v.runtimeName, 'corral');
    const logged = (await d.logLines()).filter((l) => /unhandled promise rejection/.test(l.msg ?? ''));
    assert.equal(logged.length, 3, await d.logTail());
    assert.equal(logged[0].err, 'corral-test: injected unhandled rejection');
    assert.match(logged[0].stack, /injected unhandled rejection\n\s+at /);
  } finally {
    await d.cleanup();
  }
});

test('an uncaught exception makes the daemon log it and shut down gracefully with exit status 70', async () => {
  const d = await startWithInjector('throw');
  try {
    const pid = d.pid!;
    process.kill(pid, 'SIGUSR2');
    await waitFor(() => !alive(pid), { timeoutMs: 20_000, intervalMs: 50, what: 'the daemon to exit' });
    assert.equal(await d.stopDaemon(), 70);
    const lines = await d.logLines();
    const fatal = lines.find((l) => /uncaught exception/.test(l.msg ?? ''));
    assert.ok(fatal, await d.logTail());
    assert.equal(fatal.level, 60);
    assert.match(fatal.stack, /injected uncaught exception/);
    assert.ok(lines.some((l) => l.msg === 'cri server stopped'), 'the CRI server went through its graceful shutdown');
    assert.equal(existsSync(d.socket), false, 'the socket is removed');
  } finally {
    await d.cleanup();
  }
});
