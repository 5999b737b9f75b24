/**
 * Runs real sandbox (pause) containers with runc and crun from specs built by
 * buildSandboxSpec on the shared built-in rootfs. Needs root; skipped otherwise.
 * Everything a test creates (containers, netns, tmpfs mounts, cgroups, dirs) is
 * removed in its cleanup, failing or not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { nativeBinary, packageRoot } from '../../src/util/paths.js';
import { buildSandboxSpec, DEFAULT_SANDBOX_OOM_SCORE_ADJ, type SandboxSpecInput } from '../../src/oci/sandbox-spec.js';
import { clampOomScoreAdj } from '../../src/oci/cgroups.js';
import { hostIsCgroupV2 } from '../../src/oci/cgroup-limits.js';
import type { OciSpec } from '../../src/oci/oci-types.js';
import { currentCapabilities, OciRuntime, oomScoreAdjFloor } from '../../src/oci/runtime.js';
import { ensureBuiltinSandboxRootfs, writeBundle } from '../../src/oci/sandbox-rootfs.js';
import type { RuntimeHandlerConfig } from '../../src/config/config.js';
import { waitFor } from '../helpers/wait.js';

const CGROUP_ROOT = '/sys/fs/cgroup';
const CGROUP_TEST_PARENT = 'corral-test';

const isRoot = process.getuid?.() === 0;
function have(bin: string): boolean {
  return spawnSync(bin, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** A stand-in pause, used only when the real native build is unavailable. */
const STANDIN_PAUSE_C = `
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, quit); signal(SIGINT, quit); signal(SIGCHLD, reap);
  for (;;) pause();
}
`;

let pausePromise: Promise<string> | undefined;
function pauseBinary(scratch: string): Promise<string> {
  pausePromise ??= (async () => {
    const script = path.join(packageRoot(), 'scripts', 'build-native.sh');
    if (existsSync(script) && existsSync(path.join(packageRoot(), 'native', 'pause.c'))) {
      const r = spawnSync('bash', [script], { stdio: 'pipe' });
      if (r.status === 0 && existsSync(nativeBinary('corral-pause'))) return nativeBinary('corral-pause');
    }
    if (existsSync(nativeBinary('corral-pause'))) return nativeBinary('corral-pause');
    const src = path.join(scratch, 'pause.c');
    const out = path.join(scratch, 'pause');
    await fs.writeFile(src, STANDIN_PAUSE_C);
    execFileSync('gcc', ['-O2', '-static', '-o', out, src]);
    return out;
  })();
  return pausePromise;
}

/**
 * crun 1.8 refuses every container on a hybrid cgroup host whose cgroup2 mount has
 * controllers (here: hugetlb). For the tests only, such hosts run crun through a wrapper
 * that hides the cgroup2 mount in a private mount namespace, so crun sees plain v1.
 */
function crunNeedsHybridWorkaround(): boolean {
  try {
    return readFileSync('/sys/fs/cgroup/unified/cgroup.controllers', 'utf8').trim() !== '';
  } catch {
    return false;
  }
}

async function runtimeBinary(name: string, scratch: string): Promise<string> {
  if (name !== 'crun' || !crunNeedsHybridWorkaround()) return name;
  const wrapper = path.join(scratch, 'crun-v1-only');
  await fs.writeFile(
    wrapper,
    '#!/bin/sh\n' +
      'exec unshare --mount --propagation private sh -c \'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"\' crun "$@"\n',
    { mode: 0o755 },
  );
  return wrapper;
}

function cgroupHierarchies(): string[] {
  return readdirSync(CGROUP_ROOT)
    .map((d) => path.join(CGROUP_ROOT, d))
    .filter((d) => {
      try {
        return statSync(d).isDirectory() && existsSync(path.join(d, 'cgroup.procs'));
      } catch {
        return false;
      }
    });
}

async function removeCgroupTree(dir: string): Promise<void> {
  let entries: string[] = [];
  try {
    entries = (await fs.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return;
  }
  for (const e of entries) await removeCgroupTree(path.join(dir, e));
  await fs.rmdir(dir).catch(() => undefined);
}

/** Leftover cgroup dirs of a container, in every hierarchy. */
function cgroupLeftovers(id: string): string[] {
  return cgroupHierarchies()
    .map((h) => path.join(h, CGROUP_TEST_PARENT, id))
    .filter((p) => existsSync(p));
}

interface Fixture {
  dir: string;
  rootfs: string;
  runtime: OciRuntime;
  netnsName: string | null;
  netnsPath: string | null;
  shmDir: string;
  id: string;
  input: SandboxSpecInput;
  cleanup: () => Promise<void>;
}

async function setup(runtimeName: string, opts: { hostNetwork?: boolean } = {}): Promise<Fixture> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-ocitest-'));
  const rand = randomBytes(4).toString('hex');
  const id = `ocitest-${runtimeName}-${rand}`;
  const cleanups: Array<() => Promise<void> | void> = [];
  const handler: RuntimeHandlerConfig = {
    name: runtimeName,
    path: await runtimeBinary(runtimeName, dir),
    root: path.join(dir, 'state', runtimeName),
    type: 'oci',
    cniConfDir: '',
    cniMaxNetworks: 0,
  };
  const runtime = new OciRuntime(handler);
  // Registered first, run last: the dir goes after everything inside it is released.
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  cleanups.push(async () => {
    for (const h of cgroupHierarchies()) {
      await removeCgroupTree(path.join(h, CGROUP_TEST_PARENT, id));
      await fs.rmdir(path.join(h, CGROUP_TEST_PARENT)).catch(() => undefined);
    }
  });
  const cleanup = async () => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (e) {
        console.error('cleanup step failed:', e);
      }
    }
  };
  try {
    const pause = await pauseBinary(dir);
    const rootfs = await ensureBuiltinSandboxRootfs(path.join(dir, 'root'), pause);

    let netnsName: string | null = null;
    let netnsPath: string | null = null;
    if (!opts.hostNetwork) {
      netnsName = `corral-ocitest-${rand}`;
      execFileSync('ip', ['netns', 'add', netnsName]);
      const name = netnsName;
      cleanups.push(() => {
        spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
      });
      netnsPath = `/var/run/netns/${netnsName}`;
    }

    const shmDir = path.join(dir, 'shm');
    await fs.mkdir(shmDir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=1777,size=65536k,nosuid,nodev,noexec', 'shm', shmDir]);
    cleanups.push(() => {
      spawnSync('umount', ['-l', shmDir], { stdio: 'ignore' });
    });

    const files = path.join(dir, 'files');
    await fs.mkdir(files);
    await fs.writeFile(path.join(files, 'resolv.conf'), 'nameserver 10.96.0.10\nsearch default.svc.cluster.local\n');
    await fs.writeFile(path.join(files, 'hostname'), 'ocitest-pod\n');
    await fs.writeFile(path.join(files, 'hosts'), '127.0.0.1 localhost\n');

    // Runs before the netns/shm/dir cleanups: the container must go first.
    cleanups.push(async () => {
      await runtime.delete(id, true).catch(() => undefined);
      spawnSync(runtimeName, ['--root', handler.root, 'delete', '--force', id], { stdio: 'ignore' });
    });

    const input: SandboxSpecInput = {
      sandboxId: id,
      name: 'ocitest-pod',
      namespace: 'default',
      uid: `uid-${rand}`,
      attempt: 0,
      hostname: 'ocitest-pod',
      logDirectory: path.join(dir, 'logs'),
      imageName: '',
      netnsPath,
      hostPid: false,
      hostIpc: false,
      sharedPidNamespace: true,
      hostCgroupV2: await hostIsCgroupV2(),
      privileged: false,
      readOnlyRootfs: true,
      cgroupsPath: `/${CGROUP_TEST_PARENT}/${id}`,
      sysctls: opts.hostNetwork ? {} : { 'net.ipv4.ip_unprivileged_port_start': '0' },
      oomScoreAdj: clampOomScoreAdj(DEFAULT_SANDBOX_OOM_SCORE_ADJ, await oomScoreAdjFloor()),
      noNewPrivileges: false,
      seccomp: { type: 'unconfined' },
      resolvConfPath: path.join(files, 'resolv.conf'),
      hostnamePath: path.join(files, 'hostname'),
      hostsPath: path.join(files, 'hosts'),
      shmPath: shmDir,
      annotations: { 'example.com/pod-annotation': 'passed-through' },
      availableCapabilities: await currentCapabilities(),
    };
    return { dir, rootfs, runtime, netnsName, netnsPath, shmDir, id, input, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

function procStatusField(pid: number, field: string): string {
  const text = execFileSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' });
  const m = new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(text);
  return m ? m[1].trim() : '';
}

/** create → created, start → running, checks, stopAndDelete → gone, cgroups gone. */
async function lifecycle(f: Fixture, spec: OciSpec, check: (pid: number) => Promise<void> | void): Promise<void> {
  const bundle = path.join(f.dir, 'bundles', f.id);
  await writeBundle(bundle, spec, f.rootfs);
  const written = JSON.parse(await fs.readFile(path.join(bundle, 'config.json'), 'utf8')) as OciSpec;
  assert.equal(written.root.path, f.rootfs);
  assert.equal(written.root.readonly, true);
  for (const [k, v] of Object.entries(spec.annotations)) assert.equal(written.annotations[k], v, `annotation ${k} in config.json`);

  const pidFile = path.join(f.dir, `${f.id}.pid`);
  await f.runtime.create(f.id, bundle, { pidFile });
  const created = await f.runtime.state(f.id);
  assert.equal(created?.status, 'created');
  assert.ok(created.pid > 0);
  assert.equal(Number((await fs.readFile(pidFile, 'utf8')).trim()), created.pid);
  assert.deepEqual(await f.runtime.list(), [f.id]);

  await f.runtime.start(f.id);
  const running = await f.runtime.state(f.id);
  assert.equal(running?.status, 'running');
  assert.ok(running.pid > 0);
  assert.ok(
    cgroupHierarchies().some((h) => existsSync(path.join(h, CGROUP_TEST_PARENT, f.id))),
    'the runtime made the cgroup at cgroupsPath',
  );
  if (existsSync(path.join(CGROUP_ROOT, 'memory'))) {
    const procs = await fs.readFile(path.join(CGROUP_ROOT, 'memory', CGROUP_TEST_PARENT, f.id, 'cgroup.procs'), 'utf8');
    assert.ok(procs.split('\n').includes(String(running.pid)), 'pause is in its memory cgroup');
  }
  const oom = Number((await fs.readFile(`/proc/${running.pid}/oom_score_adj`, 'utf8')).trim());
  assert.equal(oom, spec.process.oomScoreAdj);

  await check(running.pid);

  // Still running after the checks (e.g. seccomp did not kill it).
  assert.equal((await f.runtime.state(f.id))?.status, 'running');

  await f.runtime.stopAndDelete(f.id, 5_000);
  assert.equal(await f.runtime.state(f.id), null);
  assert.deepEqual(await f.runtime.list(), []);
  assert.deepEqual(cgroupLeftovers(f.id), [], 'cgroup removed with the container');
  // Idempotent.
  await f.runtime.stopAndDelete(f.id, 1_000);
  await f.runtime.delete(f.id);
  await f.runtime.kill(f.id, 'TERM');
}

const skip = !isRoot ? 'needs root' : false;

for (const rt of ['runc', 'crun']) {
  const skipRt = skip || (!have(rt) ? `${rt} not installed` : false);

  test(`${rt}: sandbox in a pinned netns: create, start, state, stop, delete`, { skip: skipRt }, async () => {
    const f = await setup(rt);
    try {
      const spec = buildSandboxSpec(f.input);
      await lifecycle(f, spec, async (pid) => {
        const ours = statSync(`/proc/${pid}/ns/net`).ino;
        assert.equal(ours, statSync(f.netnsPath!).ino, 'pause runs in the pinned netns');
        assert.notEqual(ours, statSync('/proc/self/ns/net').ino);
        assert.notEqual(statSync(`/proc/${pid}/ns/pid`).ino, statSync('/proc/self/ns/pid').ino);
        assert.notEqual(statSync(`/proc/${pid}/ns/ipc`).ino, statSync('/proc/self/ns/ipc').ino);
        assert.notEqual(statSync(`/proc/${pid}/ns/uts`).ino, statSync('/proc/self/ns/uts').ino);
        const inNs = execFileSync('ip', ['netns', 'exec', f.netnsName!, 'cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start'], {
          encoding: 'utf8',
        });
        assert.equal(inNs.trim(), '0', 'sysctl applied in the pod netns');
        assert.equal(procStatusField(pid, 'Uid').split(/\s+/)[0], '0');
        assert.equal(procStatusField(pid, 'Seccomp'), '0');
        const resolv = await fs.readFile(`/proc/${pid}/root/etc/resolv.conf`, 'utf8');
        assert.match(resolv, /nameserver 10\.96\.0\.10/);
        assert.equal((await fs.readFile(`/proc/${pid}/root/etc/hostname`, 'utf8')).trim(), 'ocitest-pod');
        // Read-only root: the pause's / is mounted ro.
        const rootMount = (await fs.readFile(`/proc/${pid}/mountinfo`, 'utf8'))
          .split('\n')
          .map((l) => l.split(' '))
          .filter((f) => f[4] === '/')
          .pop();
        assert.ok(rootMount, 'the pause has a root mount');
        assert.ok(rootMount[5].split(',').includes('ro'), `root mounted read-only (${rootMount[5]})`);
      });
    } finally {
      await f.cleanup();
    }
  });

  test(`${rt}: runAsUser with RuntimeDefault seccomp keeps the pause running`, { skip: skipRt }, async () => {
    const f = await setup(rt);
    try {
      const spec = buildSandboxSpec({
        ...f.input,
        runAsUser: 65534,
        runAsGroup: 65534,
        supplementalGroups: [1234],
        seccomp: { type: 'runtimeDefault' },
      });
      assert.ok(spec.linux.seccomp);
      await lifecycle(f, spec, async (pid) => {
        // Give a bad filter a moment to bite.
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(procStatusField(pid, 'Uid').split(/\s+/)[0], '65534');
        assert.equal(procStatusField(pid, 'Gid').split(/\s+/)[0], '65534');
        assert.match(procStatusField(pid, 'Groups'), /\b1234\b/);
        assert.equal(procStatusField(pid, 'Seccomp'), '2', 'a seccomp filter is active');
      });
    } finally {
      await f.cleanup();
    }
  });

  test(`${rt}: privileged, host network, host IPC sandbox`, { skip: skipRt }, async () => {
    const f = await setup(rt, { hostNetwork: true });
    try {
      const spec = buildSandboxSpec({ ...f.input, privileged: true, hostIpc: true, shmPath: null, seccomp: { type: 'runtimeDefault' } });
      assert.equal(spec.linux.seccomp, undefined);
      await lifecycle(f, spec, (pid) => {
        assert.equal(statSync(`/proc/${pid}/ns/net`).ino, statSync('/proc/self/ns/net').ino, 'host network');
        assert.equal(statSync(`/proc/${pid}/ns/ipc`).ino, statSync('/proc/self/ns/ipc').ino, 'host IPC');
        assert.equal(statSync(`/proc/${pid}/ns/uts`).ino, statSync('/proc/self/ns/uts').ino, 'host UTS');
        const capEff = BigInt('0x' + procStatusField(pid, 'CapEff'));
        assert.ok((capEff >> 21n) & 1n, 'CAP_SYS_ADMIN present when privileged');
        assert.equal(procStatusField(pid, 'Seccomp'), '0');
      });
    } finally {
      await f.cleanup();
    }
  });

  test(`${rt}: stopAndDelete escalates to SIGKILL when SIGTERM does not stop the sandbox`, { skip: skipRt }, async () => {
    const f = await setup(rt, { hostNetwork: true });
    try {
      const bundle = path.join(f.dir, 'bundles', f.id);
      await writeBundle(bundle, buildSandboxSpec(f.input), f.rootfs);
      await f.runtime.create(f.id, bundle);
      await f.runtime.start(f.id);
      const pid = (await f.runtime.state(f.id))!.pid;
      // A stopped process leaves SIGTERM pending, so only the SIGKILL fallback ends it.
      await f.runtime.kill(f.id, 'STOP', true);
      // The signal is delivered asynchronously: on a loaded machine the process may still read R for a moment.
      await waitFor(() => /^T/.test(procStatusField(pid, 'State')), { timeoutMs: 5000, what: `pid ${pid} to be stopped (State T)` });
      const t0 = Date.now();
      await f.runtime.stopAndDelete(f.id, 300);
      assert.ok(Date.now() - t0 >= 300, 'waited for the grace period');
      assert.equal(await f.runtime.state(f.id), null);
      assert.deepEqual(cgroupLeftovers(f.id), []);
    } finally {
      await f.cleanup();
    }
  });

  test(`${rt}: errors carry the runtime's message; unknown ids are tolerated`, { skip: skipRt }, async () => {
    const f = await setup(rt, { hostNetwork: true });
    try {
      assert.equal(await f.runtime.state('no-such-container'), null);
      await f.runtime.delete('no-such-container');
      await f.runtime.kill('no-such-container', 'TERM');
      await f.runtime.stopAndDelete('no-such-container', 100);
      await assert.rejects(f.runtime.start('no-such-container'), (e: Error) => {
        assert.match(e.message, new RegExp(`^${rt} start no-such-container failed`));
        assert.ok(e.message.length > `${rt} start no-such-container failed (exit status 1): `.length, e.message);
        return true;
      });
      // A bundle whose rootfs does not exist: create fails with the runtime's reason.
      const bundle = path.join(f.dir, 'bad-bundle');
      await writeBundle(bundle, buildSandboxSpec(f.input), path.join(f.dir, 'missing-rootfs'));
      await assert.rejects(f.runtime.create(f.id, bundle), (e: Error) => {
        assert.match(e.message, new RegExp(`^${rt} create ${f.id} failed`));
        assert.match(e.message, /missing-rootfs|no such file|not exist/i);
        return true;
      });
      await f.runtime.delete(f.id);
      assert.equal(await f.runtime.state(f.id), null);
    } finally {
      await f.cleanup();
    }
  });
}
