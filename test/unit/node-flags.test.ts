/**
 * The daemon's environment (src/cli/node-flags.ts): the glibc malloc tunables are names glibc
 * knows and takes (a misspelt one is ignored without a word), a user's own GLIBC_TUNABLES is
 * kept by every form of it, and scripts/start.sh evaluates it before starting the daemon.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { tunablesInEffect } from '../helpers/glibc-tunables.js';
import { DAEMON_ENV, DAEMON_GLIBC_TUNABLES, daemonEnv, daemonEnvShell } from '../../src/cli/node-flags.js';

const parsed = (s: string) => s.split(':').map((kv) => kv.split('=') as [string, string]);

test('every tunable in DAEMON_GLIBC_TUNABLES is one glibc knows, and glibc takes its value', async () => {
  assert.equal(DAEMON_ENV.GLIBC_TUNABLES, DAEMON_GLIBC_TUNABLES);
  const defaults = await tunablesInEffect(undefined);
  const ours = await tunablesInEffect(DAEMON_GLIBC_TUNABLES);
  for (const [name, value] of parsed(DAEMON_GLIBC_TUNABLES)) {
    assert.ok(defaults.has(name), `${name}: not a tunable of this glibc`);
    assert.equal(Number(ours.get(name)), Number(value), `${name} in effect`);
    assert.notEqual(Number(defaults.get(name)), Number(value), `${name}=${value} changes something`);
  }
});

test('daemonEnv: ours when the user has none; a user GLIBC_TUNABLES is kept after ours, so it wins', async () => {
  const plain = daemonEnv({ PATH: '/bin', HOME: '/root' });
  assert.deepEqual(plain, { PATH: '/bin', HOME: '/root', ...DAEMON_ENV });

  const name = parsed(DAEMON_GLIBC_TUNABLES)[0]![0];
  const user = `${name}=4096:glibc.malloc.perturb=7`;
  const merged = daemonEnv({ GLIBC_TUNABLES: user });
  assert.equal(merged.GLIBC_TUNABLES, `${DAEMON_GLIBC_TUNABLES}:${user}`);
  const effect = await tunablesInEffect(merged.GLIBC_TUNABLES);
  assert.equal(Number(effect.get(name)), 4096, 'the user setting of the same tunable wins');
  assert.equal(Number(effect.get('glibc.malloc.perturb')), 7, 'a user tunable of its own is kept');

  assert.equal(daemonEnv({ GLIBC_TUNABLES: '' }).GLIBC_TUNABLES, DAEMON_GLIBC_TUNABLES, 'an empty one is no setting');
  assert.deepEqual(daemonEnv({ FOO: 'mine' }, { FOO: 'ours' }), { FOO: 'mine' }, 'another variable the user set is left alone');
  assert.deepEqual(daemonEnv({}, { FOO: 'ours' }), { FOO: 'ours' });
});

test('daemonEnvShell, run by sh, gives the same environment as daemonEnv', async () => {
  const extra = { ...DAEMON_ENV, CORRAL_TEST_VAR: 'ours' };
  for (const user of [{}, { GLIBC_TUNABLES: 'glibc.malloc.perturb=7' }, { GLIBC_TUNABLES: '' }, { CORRAL_TEST_VAR: 'mine' }] as NodeJS.ProcessEnv[]) {
    const base = { PATH: process.env.PATH, ...user };
    const r = await execFile('sh', ['-c', `${daemonEnvShell(extra)}\nexec env`], { env: base });
    assert.equal(r.code, 0, r.stderr);
    const got = Object.fromEntries(r.stdout.split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const want = daemonEnv(base, extra);
    for (const k of Object.keys(extra)) assert.equal(got[k], want[k], `${k} with ${JSON.stringify(user)}`);
  }
  assert.throws(() => daemonEnvShell({ GLIBC_TUNABLES: 'a=1;reboot' }), /not a plain shell word/);
});

test('scripts/start.sh evaluates the daemon environment before it starts the daemon', () => {
  const script = readFileSync(path.join(packageRoot(), 'scripts/start.sh'), 'utf8');
  const shellAt = script.search(/^daemon_env=\$\(node -e '[^']*m\.daemonEnvShell\(\)[^']*' "\$PWD\/dist\/src\/cli\/node-flags\.js"\)$/m);
  const evalAt = script.search(/^eval "\$daemon_env"$/m);
  const execAt = script.search(/^exec node \$node_flags dist\/src\/cli\/main\.js serve "\$@"$/m);
  assert.ok(shellAt >= 0, 'start.sh takes daemonEnvShell() (in an assignment: set -e stops it if node fails)');
  assert.ok(evalAt > shellAt, 'and evaluates it');
  assert.ok(execAt > evalAt, 'before it execs the daemon');
});
