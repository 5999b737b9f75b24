/** The `corral` executable: client commands against a real daemon, doctor, and config refusal at start. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';

const d = new TestDaemon();
const corral = (...args: string[]) => execFile(process.execPath, [path.join(packageRoot(), 'dist/src/cli/main.js'), ...args], { timeoutMs: 60_000 });

before(async () => {
  await d.start();
});
after(async () => {
  await d.cleanup();
});

test('version, info, runp, pods, inspectp, stopp, rmp through the CLI', async () => {
  const ep = ['-r', `unix://${d.socket}`];
  const v = await corral('version', ...ep);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /RuntimeName:\s+corral/);
  const info = await corral('info', ...ep);
  assert.equal(info.code, 0, info.stderr);
  const parsed = JSON.parse(info.stdout);
  assert.equal(parsed.status.conditions.find((c: any) => c.type === 'NetworkReady').status, true);
  assert.equal(parsed.info.config.netnsDir, d.netnsDir);

  // crictl's pod config format: snake_case fields.
  const podFile = path.join(d.dir, 'pod.json');
  await fs.writeFile(podFile, JSON.stringify({
    metadata: { name: 'cli-pod', namespace: 'default', uid: 'cli-uid', attempt: 1 },
    log_directory: '/tmp/corral-cli-logs',
    labels: { tier_name: 'web' },
    linux: { security_context: { namespace_options: { pid: 1 } } },
  }));
  const run = await corral('runp', ...ep, podFile);
  assert.equal(run.code, 0, run.stderr);
  const id = run.stdout.trim();
  assert.match(id, /^[0-9a-f]{64}$/);

  const pods = await corral('pods', ...ep);
  assert.match(pods.stdout, /POD ID\s+CREATED\s+STATE\s+NAME/);
  assert.match(pods.stdout, new RegExp(`${id.slice(0, 13)}.*Ready\\s+cli-pod\\s+default\\s+1`));
  assert.equal((await corral('pods', ...ep, '-q', '--label', 'tier_name=web')).stdout.trim(), id);
  assert.equal((await corral('pods', ...ep, '-q', '--label', 'tier_name=db')).stdout.trim(), '');

  const insp = await corral('inspectp', ...ep, id.slice(0, 6));
  const status = JSON.parse(insp.stdout);
  assert.equal(status.status.id, id);
  assert.equal(status.info.info.infraMode, 'pinned', 'pid CONTAINER (1) from snake_case input reached the daemon');
  assert.ok(status.status.network.ip);

  assert.equal((await corral('stopp', ...ep, id)).code, 0);
  assert.equal((await corral('pods', ...ep, '-q', '--state', 'notready')).stdout.trim(), id);
  const rm = await corral('rmp', ...ep, id);
  assert.equal(rm.code, 0);
  assert.match(rm.stdout, /Removed sandbox/);
  assert.equal((await corral('pods', ...ep, '-q')).stdout.trim(), '');

  const bad = await corral('inspectp', ...ep, 'ffffffff');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /not found/);
});

test('serve refuses a bad config with the key and the reason, before touching anything', async () => {
  const file = path.join(d.dir, 'bad.toml');
  await fs.writeFile(file, `root_dir = "${d.dir}/never"\n[cni]\nmax_networks = "two"\n`);
  const r = await corral('serve', '--config', file);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cni\.max_networks: must be a whole number/);
  await assert.rejects(fs.stat(path.join(d.dir, 'never')));
});

test('doctor checks the host and passes on a prepared machine', async () => {
  const r = await corral('doctor', '--config', d.configFile);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  for (const line of [/\[ok  \] running as root/, /runtime handler "runc"/, /CNI plugin bridge: /, /corral-nshelper/, /cgroups: v[12]/]) {
    assert.match(r.stdout, line);
  }
  assert.match(r.stdout, /this host can run Corral/);
});
