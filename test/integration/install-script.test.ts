/**
 * scripts/install.sh into a scratch prefix (BIN_DIR, CONFIG_DIR, UNIT_DIR), so the test never
 * touches /usr/local/bin or /etc: the wrapper runs this checkout's corral, the example config
 * is installed once and never overwritten, and systemd-analyze verify accepts the unit.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { resolveConfig, defaultConfig } from '../../src/config/config.js';
import { parse } from 'smol-toml';
import { DAEMON_ENV, DAEMON_NODE_FLAGS, daemonEnv } from '../../src/cli/node-flags.js';

let dir: string;
let env: NodeJS.ProcessEnv;
const install = () => execFile('bash', [path.join(packageRoot(), 'scripts/install.sh')], { env, timeoutMs: 60_000 });

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-install-'));
  env = { ...process.env, BIN_DIR: path.join(dir, 'bin'), CONFIG_DIR: path.join(dir, 'etc/corral'), UNIT_DIR: path.join(dir, 'systemd') };
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('install.sh: corral on the given PATH dir, the example config, the unit; a second run keeps the config', async () => {
  const first = await install();
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /systemctl (daemon-reload && systemctl )?enable --now corral/, 'says how to enable the service');

  const version = await execFile(path.join(dir, 'bin/corral'), ['--version']);
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, /^corral \d+\.\d+\.\d+/);
  // V8 takes these only on the command line: the wrapper (which the unit runs) must pass them.
  const wrapper = await fs.readFile(path.join(dir, 'bin/corral'), 'utf8');
  assert.ok(DAEMON_NODE_FLAGS.length > 0);
  assert.match(wrapper, new RegExp(`^exec "[^"]+" ${DAEMON_NODE_FLAGS.join(' ')} "${path.join(packageRoot(), 'dist/src/cli/main.js')}" "\\$@"$`, 'm'));
  // glibc reads its malloc tunables only at start: the wrapper gives the daemon's environment,
  // keeping a GLIBC_TUNABLES of the user's own. Run with `env` in place of node, it shows it.
  assert.ok(Object.keys(DAEMON_ENV).length > 0);
  const showEnv = path.join(dir, 'wrapper-env.sh');
  await fs.writeFile(showEnv, wrapper.replace(/^exec .*$/m, 'exec env'), { mode: 0o755 });
  for (const user of [{}, { GLIBC_TUNABLES: 'glibc.malloc.perturb=7' }] as NodeJS.ProcessEnv[]) {
    const base = { PATH: process.env.PATH, ...user };
    const shown = await execFile(showEnv, [], { env: base });
    assert.equal(shown.code, 0, shown.stderr);
    const want = daemonEnv(base);
    for (const k of Object.keys(DAEMON_ENV)) assert.ok(shown.stdout.split('\n').includes(`${k}=${want[k]}`), `the wrapper sets ${k}=${want[k]} (user env ${JSON.stringify(user)}):\n${shown.stdout}`);
  }

  const configFile = path.join(dir, 'etc/corral/config.toml');
  const installed = await fs.readFile(configFile, 'utf8');
  assert.equal(installed, await fs.readFile(path.join(packageRoot(), 'config/config.example.toml'), 'utf8'));
  assert.deepEqual(resolveConfig(parse(installed) as Record<string, unknown>), defaultConfig());

  const unit = await fs.readFile(path.join(dir, 'systemd/corral.service'), 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${path.join(dir, 'bin/corral')} serve --config ${configFile}$`, 'm'));

  await fs.writeFile(configFile, 'log_format = "text"\n');
  const second = await install();
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /kept the existing/);
  assert.equal(await fs.readFile(configFile, 'utf8'), 'log_format = "text"\n', 'an existing config is never overwritten');
});

test('install.sh refuses to replace a "corral" on PATH that is not its own wrapper', async () => {
  const foreign = path.join(dir, 'foreign');
  await fs.mkdir(foreign, { recursive: true });
  await fs.writeFile(path.join(foreign, 'corral'), '#!/bin/sh\necho somebody else\n', { mode: 0o755 });
  const r = await execFile('bash', [path.join(packageRoot(), 'scripts/install.sh')], { env: { ...env, BIN_DIR: foreign }, timeoutMs: 60_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /is not Corral's wrapper; move it away or set BIN_DIR/);
  assert.equal(await fs.readFile(path.join(foreign, 'corral'), 'utf8'), '#!/bin/sh\necho somebody else\n');
});

test('install.sh as a user who cannot write the target dirs says to run as root, and writes nothing', async () => {
  const target = path.join(dir, 'root-only');
  await fs.mkdir(target, { mode: 0o755 });
  await fs.chmod(dir, 0o755); // mkdtemp makes it 0700: nobody must reach the script's targets to be refused by them
  const r = await execFile('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', path.join(packageRoot(), 'scripts/install.sh')], {
    env: { ...env, BIN_DIR: path.join(target, 'bin'), CONFIG_DIR: path.join(target, 'etc'), UNIT_DIR: path.join(target, 'systemd') },
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stderr, /cannot write .*root-only\/bin: run as root/);
  assert.deepEqual(await fs.readdir(target), []);
});

test('systemd-analyze verify accepts the installed unit without a warning', async (t) => {
  const which = await execFile('sh', ['-c', 'command -v systemd-analyze']);
  if (which.code !== 0) {
    t.skip('systemd-analyze is not installed (apt-get install systemd)');
    return;
  }
  const unitFile = path.join(dir, 'systemd/corral.service');
  const r0 = await install(); // idempotent: the test stands on its own
  assert.equal(r0.code, 0, r0.stderr);
  const r = await execFile('systemd-analyze', ['verify', unitFile], { timeoutMs: 60_000 });
  // verify exits 0 on an unknown key or a bad value and only warns: any output is a defect.
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', r.stderr);
});
