/** The pure parts of the streaming backend: the helper's report, conmon's ctl lines, TERM, paths. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exitCodeFromReport, withTerm } from '../../src/streaming/backend/exec.js';
import { ctlResizeLine } from '../../src/streaming/backend/attach.js';
import { conmonStreamPaths } from '../../src/streaming/backend/index.js';

test('the helper report gives the exit code, 128+n for a signal, and a reason otherwise', () => {
  assert.deepEqual(exitCodeFromReport('exited 0\n'), { code: 0 });
  assert.deepEqual(exitCodeFromReport('exited 42\n'), { code: 42 });
  assert.deepEqual(exitCodeFromReport('signaled 9\n'), { code: 137 });
  assert.deepEqual(exitCodeFromReport('signaled 15\n'), { code: 143 });
  assert.match((exitCodeFromReport('runtime-failed 1\n') as { failure: string }).failure, /runtime failed \(exit status 1\)/);
  assert.match((exitCodeFromReport('lost 10\n') as { failure: string }).failure, /lost/);
  assert.match((exitCodeFromReport('') as { failure: string }).failure, /without a report/);
  assert.match((exitCodeFromReport('garbage') as { failure: string }).failure, /unexpected/);
});

test("conmon's ctl line is rows then columns; sizes conmon would drop are skipped", () => {
  assert.equal(ctlResizeLine({ width: 80, height: 24 }), '1 24 80\n');
  for (const bad of [{ width: 0, height: 24 }, { width: 80, height: 0 }, { width: 1001, height: 5 }, { width: 1.5, height: 5 }, { width: -1, height: 5 }]) {
    assert.equal(ctlResizeLine(bad), null, JSON.stringify(bad));
  }
});

test('a TTY exec gets TERM=xterm unless the container sets TERM', () => {
  assert.deepEqual(withTerm(['PATH=/bin']), ['PATH=/bin', 'TERM=xterm']);
  assert.deepEqual(withTerm(['TERM=vt100', 'PATH=/bin']), ['TERM=vt100', 'PATH=/bin']);
});

test("conmon's attach socket is under the socket dir's per-container symlink; ctl and config in the bundle", () => {
  assert.deepEqual(conmonStreamPaths('/run/corral', 'abc'), {
    attachSocket: '/run/corral/attach/abc/attach',
    ctlFifo: '/run/corral/containers/abc/bundle/ctl',
    bundleConfig: '/run/corral/containers/abc/bundle/config.json',
  });
});
