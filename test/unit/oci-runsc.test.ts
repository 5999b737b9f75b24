import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from '../../src/util/exec.js';
import { capabilitiesForHandler, execProcessFrom, parseRunscStats, isRunscHandler, isRunscProcessOf, runscKnows, runscWrapperScript } from '../../src/oci/runsc.js';
import { ALL_CAPABILITIES } from '../../src/oci/capabilities.js';

test('isRunscHandler: runsc by its binary name, wherever it lives; runc and crun are not', () => {
  assert.equal(isRunscHandler({ path: 'runsc' }), true);
  assert.equal(isRunscHandler({ path: '/usr/bin/runsc' }), true);
  assert.equal(isRunscHandler({ path: '/opt/gvisor/runsc-2022' }), true);
  assert.equal(isRunscHandler({ path: 'runc' }), false);
  assert.equal(isRunscHandler({ path: '/usr/bin/crun' }), false);
  assert.equal(isRunscHandler({ path: '/opt/runsc/kata-runtime' }), false);
});

test('runscWrapperScript: runs runsc through the helper with every argument, quoting paths for sh', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-runsc-unit-'));
  try {
    // A stand-in helper that prints its arguments, one a line: what the script passes on.
    const helper = path.join(dir, "fake helper's");
    await fs.writeFile(helper, '#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n', { mode: 0o755 });
    const script = path.join(dir, 'wrapper');
    await fs.writeFile(script, runscWrapperScript(helper, '/usr/bin/runsc', 'runsc'), { mode: 0o755 });
    const r = await execFile(script, ['--root', '/run/x y', 'create', '$HOME', 'id']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\n').slice(0, -1), ['/usr/bin/runsc', '--root', '/run/x y', 'create', '$HOME', 'id']);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('isRunscProcessOf: the sandbox, gofer and waiter of one container under one root, nothing else', () => {
  const root = '/run/corral/runsc';
  const id = 'b33fd5dd04bd6a39';
  const sandbox = ['runsc-sandbox', `--root=${root}`, '--log-format=json', 'boot', `--bundle=/run/corral/sandboxes/${id}/bundle`, '--io-fds=4', id];
  const gofer = ['runsc-gofer', `--root=${root}`, 'gofer', '--bundle', `/run/corral/containers/${id}/bundle`, '--spec-fd=4'];
  const waiter = ['/usr/lib/corral/dist/native/corral-runsc', '/usr/bin/runsc', `--root=${root}`, 'create', '--bundle', `/run/x/${id}/bundle`, id];
  const wait = ['/usr/bin/runsc', '--root', root, 'wait', id];
  for (const argv of [sandbox, gofer, waiter, wait]) assert.equal(isRunscProcessOf(argv, root, id), true, argv.join(' '));
  // Another container, another root, another program.
  assert.equal(isRunscProcessOf(sandbox, root, 'c0ffee'), false);
  assert.equal(isRunscProcessOf(sandbox, '/run/other/runsc', id), false);
  assert.equal(isRunscProcessOf(['runc', `--root=${root}`, 'create', id], root, id), false);
  assert.equal(isRunscProcessOf(['sleep', id], root, id), false);
  assert.equal(isRunscProcessOf([], root, id), false);
  // An ID that is only a prefix of the one in the arguments is not it.
  assert.equal(isRunscProcessOf(sandbox, root, id.slice(0, 8)), false);
});

test('runscKnows: runsc keeps <id>_sandbox:<sandbox>.state files, not a directory per container', async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-runsc-root-'));
  try {
    await fs.writeFile(path.join(root, 'aaa_sandbox:sss.state'), '{}');
    await fs.writeFile(path.join(root, 'aaa_sandbox:sss.lock'), '');
    await fs.writeFile(path.join(root, 'bbb_sandbox:sss.lock'), '');
    await fs.mkdir(path.join(root, 'ccc'));
    assert.equal(await runscKnows(root, 'aaa'), true);
    assert.equal(await runscKnows(root, 'bbb'), false, 'a lock file alone is no container');
    assert.equal(await runscKnows(root, 'ccc'), false, 'a runc-style directory is not runsc state');
    assert.equal(await runscKnows(root, 'aa'), false);
    assert.equal(await runscKnows(path.join(root, 'missing'), 'aaa'), false);
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
});

test('capabilitiesForHandler: runsc (2022-12) is not offered CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE, which it refuses; runc keeps all', () => {
  const forRunsc = capabilitiesForHandler({ path: 'runsc' }, ALL_CAPABILITIES);
  assert.equal(forRunsc.length, ALL_CAPABILITIES.length - 3);
  for (const c of ['CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE']) assert.ok(!forRunsc.includes(c), c);
  assert.ok(forRunsc.includes('CAP_SYS_ADMIN') && forRunsc.includes('CAP_AUDIT_READ'));
  assert.deepEqual(capabilitiesForHandler({ path: 'runc' }, ALL_CAPABILITIES), ALL_CAPABILITIES);
});

test('execProcessFrom: an exec runs as the container does (user, groups, env, cwd, capabilities), with its own args and no terminal', () => {
  const proc = { terminal: true, args: ['/app'], cwd: '/work', env: ['A=1'], user: { uid: 1001, gid: 2000, additionalGids: [3000] }, capabilities: { bounding: ['CAP_KILL'] }, noNewPrivileges: true, oomScoreAdj: 5 };
  assert.deepEqual(execProcessFrom(proc, ['id', '-u']), {
    terminal: false,
    args: ['id', '-u'],
    cwd: '/work',
    env: ['A=1'],
    user: { uid: 1001, gid: 2000, additionalGids: [3000] },
    capabilities: { bounding: ['CAP_KILL'] },
    noNewPrivileges: true,
  });
  assert.equal(execProcessFrom(undefined, ['x']), undefined);
  assert.deepEqual(execProcessFrom({}, ['x']), { terminal: false, args: ['x'], cwd: '/', env: [], user: { uid: 0, gid: 0 } });
});

test('parseRunscStats: CPU and memory from runsc events --stats (runc event format); anything else is null', () => {
  const out = '{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":197395139}},"memory":{"usage":{"limit":0,"usage":2752512,"failcnt":0}},"pids":{"current":2}}}\n';
  assert.deepEqual(parseRunscStats(out), { cpuUsageNs: 197395139n, memoryUsageBytes: 2752512n });
  assert.deepEqual(parseRunscStats('{"type":"stats","data":{}}'), { cpuUsageNs: null, memoryUsageBytes: null });
  assert.equal(parseRunscStats('{"type":"oom","data":{}}'), null);
  assert.equal(parseRunscStats('not json'), null);
  assert.equal(parseRunscStats(''), null);
});
