/**
 * The daemon TestDaemon starts (as every launcher does: src/cli/node-flags.ts) runs with the
 * daemon's environment: its /proc/<pid>/environ has our GLIBC_TUNABLES, and glibc takes it.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TestDaemon } from '../helpers/daemon.js';
import { tunablesInEffect } from '../helpers/glibc-tunables.js';
import { DAEMON_ENV, DAEMON_GLIBC_TUNABLES } from '../../src/cli/node-flags.js';

const daemon = new TestDaemon();
after(() => daemon.cleanup());

test('the daemon runs with DAEMON_ENV: GLIBC_TUNABLES in its environ, in effect for glibc', async () => {
  await daemon.start();
  const environ = readFileSync(`/proc/${daemon.pid}/environ`, 'utf8').split('\0');
  const value = (name: string) => environ.find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1);
  for (const name of Object.keys(DAEMON_ENV)) assert.ok(value(name) !== undefined, `${name} is in the daemon's environment`);
  const tunables = value('GLIBC_TUNABLES')!;
  // Ours first; a GLIBC_TUNABLES of the test run's own would follow it.
  assert.ok(tunables === DAEMON_GLIBC_TUNABLES || tunables.startsWith(`${DAEMON_GLIBC_TUNABLES}:`), tunables);
  const effect = await tunablesInEffect(tunables);
  for (const [name, v] of DAEMON_GLIBC_TUNABLES.split(':').map((kv) => kv.split('=') as [string, string])) {
    if (process.env.GLIBC_TUNABLES?.includes(`${name}=`)) continue; // the user's own wins
    assert.equal(Number(effect.get(name)), Number(v), `${name} in effect`);
  }
});
