/**
 * Runs real containers through conmon (src/oci/conmon.ts) with runc and crun, on a tiny
 * busybox rootfs and a hand-written OCI config: create → `created`, start, the CRI log
 * in kubelet's format, exit codes (own and by signal), a failing create, a hung runtime.
 * Needs root, conmon, busybox; skipped otherwise. Every test removes what it made
 * (containers, conmon, cgroups, dirs), failing or not.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from '../../src/util/exec.js';
import { conmonAlive, conmonCreate, ConmonError, readExitCode, removeConmonFiles, waitForExit, type ConmonCreateOptions } from '../../src/oci/conmon.js';
import { eventually, sleep, waitFor } from '../helpers/wait.js';

const CGROUP_ROOT = '/sys/fs/cgroup';
const BUSYBOX = '/bin/busybox';

function have(bin: string, arg = '--version'): boolean {
  return spawnSync(bin, [arg], { stdio: 'ignore' }).status === 0;
}
const skipAll = process.getuid?.() !== 0 ? 'needs root' : !have('conmon') ? 'conmon is not installed' : !existsSync(BUSYBOX) ? 'busybox is not installed' : false;
const runtimes = ['runc', 'crun'].filter((r) => have(r));


/**
 * crun 1.8 refuses every container on a hybrid cgroup host whose cgroup2 mount has
 * controllers; there the tests run crun through a wrapper that hides that mount.
 */
function crunNeedsHybridWorkaround(): boolean {
  try {
    return readFileSync(path.join(CGROUP_ROOT, 'unified', 'cgroup.controllers'), 'utf8').trim() !== '';
  } catch {
    return false;
  }
}

interface Fixture {
  /** Everything of the test lives under here (removed at the end). */
  base: string;
  runtime: string;
  runtimePath: string;
  root: string;
  id: string;
  cgroupParent: string;
  opts: ConmonCreateOptions;
}

function newId(): string {
  return randomBytes(32).toString('hex');
}

async function makeRootfs(rootfs: string): Promise<void> {
  await fs.mkdir(path.join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'tmp']) await fs.mkdir(path.join(rootfs, d), { recursive: true });
  await fs.copyFile(BUSYBOX, path.join(rootfs, 'bin', 'busybox'));
  await fs.chmod(path.join(rootfs, 'bin', 'busybox'), 0o755);
  for (const l of ['sh', 'echo', 'sleep', 'cat']) await fs.symlink('busybox', path.join(rootfs, 'bin', l));
}

function ociConfig(rootfs: string, args: string[], cgroupsPath: string): object {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin'],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: false },
    hostname: 'conmon-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    linux: {
      cgroupsPath,
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
    },
  };
}

async function setUp(runtime: string, args: string[]): Promise<Fixture> {
  const tag = randomBytes(4).toString('hex');
  // Under /run/corral-test*: scripts/leak-check.sh looks for containers left in <base>/<runtime>.
  const base = `/run/corral-test-conmon-${tag}`;
  const id = newId();
  const bundleDir = path.join(base, 'bundle');
  const rootfs = path.join(bundleDir, 'rootfs');
  const cgroupParent = `corral-test-conmon-${tag}`;
  await fs.mkdir(bundleDir, { recursive: true });
  await makeRootfs(rootfs);
  await fs.writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(ociConfig(rootfs, args, `/${cgroupParent}/${id}`)));
  let runtimePath = `/usr/bin/${runtime}`;
  if (runtime === 'crun' && crunNeedsHybridWorkaround()) {
    runtimePath = path.join(base, 'crun-v1-only');
    await fs.writeFile(
      runtimePath,
      '#!/bin/sh\n' + 'exec unshare --mount --propagation private sh -c \'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"\' crun "$@"\n',
      { mode: 0o755 },
    );
  }
  const root = path.join(base, runtime);
  return {
    base,
    runtime,
    runtimePath,
    root,
    id,
    cgroupParent,
    opts: {
      id,
      name: `test-${tag}`,
      bundleDir,
      runtimePath,
      runtimeRoot: root,
      logPath: path.join(base, 'logs', 'ctr.log'),
      exitDir: path.join(base, 'exits'),
      persistDir: path.join(base, 'persist'),
      socketDir: path.join(base, 's'),
      pidFile: path.join(base, 'pid'),
      conmonPidFile: path.join(base, 'conmon.pid'),
      logSizeMax: 1 << 20,
      timeoutMs: 30_000,
    },
  };
}

/** `<runtime> --root R <args>` (through the wrapper when there is one). */
function rt(f: Fixture, ...args: string[]) {
  return execFile(f.runtimePath, ['--root', f.root, ...args], { timeoutMs: 30_000 });
}

async function ociState(f: Fixture): Promise<{ status: string; pid: number } | null> {
  const r = await rt(f, 'state', f.id);
  if (r.code !== 0) return null;
  return JSON.parse(r.stdout) as { status: string; pid: number };
}

async function readPid(file: string): Promise<number> {
  return Number.parseInt((await fs.readFile(file, 'utf8').catch(() => '0')).trim(), 10) || 0;
}

/** Processes (not zombies) whose command line mentions the container id. */
function processesMentioning(id: string): string[] {
  const r = spawnSync('pgrep', ['-a', '-f', id], { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').filter((l) => l.trim() !== '');
}

const waitUntil = (what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 5_000) => waitFor(cond, { what, timeoutMs });

async function removeCgroupTree(dir: string): Promise<void> {
  let entries: string[] = [];
  try {
    entries = (await fs.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return;
  }
  for (const e of entries) await removeCgroupTree(path.join(dir, e));
  // A cgroup whose last process has just died can be busy for a moment.
  for (let i = 0; i < 50; i++) {
    try {
      await fs.rmdir(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      await sleep(20);
    }
  }
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

/** Whatever the test left: container, conmon, cgroups, files. Never throws. */
async function tearDown(f: Fixture): Promise<void> {
  await rt(f, 'delete', '--force', f.id).catch(() => undefined);
  const conmonPid = await readPid(f.opts.conmonPidFile);
  if (await conmonAlive(conmonPid, f.id)) {
    try {
      process.kill(conmonPid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await removeConmonFiles({ id: f.id, exitDir: f.opts.exitDir, socketDir: f.opts.socketDir });
  for (const h of cgroupHierarchies()) await removeCgroupTree(path.join(h, f.cgroupParent));
  await fs.rm(f.base, { recursive: true, force: true });
}

async function withFixture(runtime: string, args: string[], body: (f: Fixture) => Promise<void>): Promise<void> {
  const f = await setUp(runtime, args);
  try {
    await body(f);
  } finally {
    await tearDown(f);
  }
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** conmons that exited but are not yet reaped (their parent is init, which reaps lazily here). */
function zombieConmons(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (stat.includes('(conmon) Z')) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

// scripts/leak-check.sh counts zombies too: give init a moment to reap the monitors we ended.
after(async () => {
  await waitFor(() => zombieConmons().length === 0, { timeoutMs: 10_000, what: 'init to reap the conmons' }).catch(() => undefined);
});

const K8S_LINE = (stream: string, text: string) => new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d+(Z|[+-]\\d\\d:\\d\\d) ${stream} F ${text}$`, 'm');

for (const runtime of runtimes) {
  test(`${runtime}: conmon creates, the container logs in k8s-file format, exit code 3 is recorded`, { skip: skipAll }, async () => {
    await withFixture(runtime, ['/bin/sh', '-c', 'echo hello; echo oops >&2; exit 3'], async (f) => {
      const fdsBefore = openFds();
      const t0 = Date.now();
      const { pid, conmonPid } = await conmonCreate(f.opts);
      const took = Date.now() - t0;
      assert.ok(took < 10_000, `create took ${took} ms`);
      assert.ok(pid > 0 && conmonPid > 0);
      assert.notEqual(pid, conmonPid);
      // Nothing of ours stays open for the monitor (sync pipe, stderr file).
      await eventually(() => assert.equal(openFds(), fdsBefore, 'file descriptors leaked by conmonCreate'), { timeoutMs: 2_000, what: 'our ends of the pipes to close' });

      const st = await ociState(f);
      assert.equal(st?.status, 'created');
      assert.equal(st?.pid, pid);
      assert.equal(await readPid(f.opts.pidFile), pid);
      assert.equal(await readPid(f.opts.conmonPidFile), conmonPid);
      assert.ok(await conmonAlive(conmonPid, f.id), 'conmon should monitor the created container');
      // The monitor runs in a session of its own, away from ours.
      const stat = readFileSync(`/proc/${conmonPid}/stat`, 'utf8');
      const sid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
      assert.equal(sid, conmonPid);
      // Its stdio is /dev/null: it holds none of our pipes.
      for (const fd of [0, 1, 2]) assert.equal(readlinkSync(`/proc/${conmonPid}/fd/${fd}`), '/dev/null');
      assert.equal(await readExitCode(f.opts.exitDir, f.id), null);
      assert.equal(await waitForExit(f.opts.exitDir, f.id, 100), null, 'a created container has not exited');

      const start = await rt(f, 'start', f.id);
      assert.equal(start.code, 0, start.stderr);
      assert.equal(await waitForExit(f.opts.exitDir, f.id, 10_000), 3);
      assert.equal(await readExitCode(f.opts.exitDir, f.id), 3);
      await waitUntil('conmon to exit', async () => !(await conmonAlive(conmonPid, f.id)));
      const log = await fs.readFile(f.opts.logPath, 'utf8');
      assert.match(log, K8S_LINE('stdout', 'hello'), log);
      assert.match(log, K8S_LINE('stderr', 'oops'), log);
      assert.match(log, /^\S+ stdout F hello$/m);
      assert.match(log, /^\S+ stderr F oops$/m);
      assert.equal((await fs.readFile(path.join(f.opts.persistDir!, 'exit'), 'utf8')).trim(), '3');

      assert.equal((await ociState(f))?.status, 'stopped');
      const del = await rt(f, 'delete', f.id);
      assert.equal(del.code, 0, del.stderr);
      assert.equal(await ociState(f), null);
      await removeConmonFiles({ id: f.id, exitDir: f.opts.exitDir, socketDir: f.opts.socketDir });
      assert.equal(existsSync(path.join(f.opts.socketDir, f.id)), false);
      assert.equal(existsSync(path.join(f.opts.exitDir, f.id)), false);
    });
  });

  test(`${runtime}: a long-running container killed by SIGKILL exits 137 and conmon goes`, { skip: skipAll }, async () => {
    await withFixture(runtime, ['/bin/sleep', '1000'], async (f) => {
      const { conmonPid } = await conmonCreate(f.opts);
      const start = await rt(f, 'start', f.id);
      assert.equal(start.code, 0, start.stderr);
      assert.equal((await ociState(f))?.status, 'running');
      assert.equal(await waitForExit(f.opts.exitDir, f.id, 300), null, 'still running');
      const kill = await rt(f, 'kill', f.id, 'KILL');
      assert.equal(kill.code, 0, kill.stderr);
      assert.equal(await waitForExit(f.opts.exitDir, f.id, 10_000), 137);
      await waitUntil('conmon to exit', async () => !(await conmonAlive(conmonPid, f.id)));
      const del = await rt(f, 'delete', f.id);
      assert.equal(del.code, 0, del.stderr);
    });
  });

  test(`${runtime}: a failing create rejects with the runtime's reason and leaves no conmon`, { skip: skipAll }, async () => {
    await withFixture(runtime, ['/nonexistent'], async (f) => {
      const fdsBefore = openFds();
      await assert.rejects(conmonCreate(f.opts), (e: unknown) => {
        assert.ok(e instanceof ConmonError, String(e));
        assert.match(e.message, /nonexistent/);
        assert.match(e.message, /no such file or directory/i);
        assert.ok(e.runtimeDetail, 'the runtime said why');
        assert.doesNotMatch(e.message, /level=|"msg"/, 'the runtime log is unwrapped');
        return true;
      });
      await eventually(() => assert.equal(openFds(), fdsBefore, 'file descriptors leaked by a failed conmonCreate'), { timeoutMs: 2_000, what: 'our ends of the pipes to close' });
      assert.deepEqual(processesMentioning(f.id), []);
      assert.equal(existsSync(f.opts.conmonPidFile), false);
      assert.equal(await ociState(f), null);
      assert.equal(existsSync(path.join(f.opts.socketDir, f.id)), false, 'attach symlink removed');
      assert.equal(await readExitCode(f.opts.exitDir, f.id), null);
    });
  });
}

test('conmon outlives the process that started it (killed with its whole process group)', { skip: skipAll || runtimes.length === 0 }, async () => {
  await withFixture(runtimes[0]!, ['/bin/sh', '-c', 'echo survived; exit 7'], async (f) => {
    // A separate "daemon" (its own process group) creates the container, reports, and is SIGKILLed.
    const moduleUrl = new URL('../../src/oci/conmon.js', import.meta.url).href;
    const script = `import(${JSON.stringify(moduleUrl)}).then(async (m) => { const r = await m.conmonCreate(JSON.parse(process.argv[1])); process.stdout.write(JSON.stringify(r) + "\\n"); setInterval(() => {}, 1000); });`;
    const daemon = spawn(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(f.opts)], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    let out = '';
    try {
      await new Promise<void>((resolve, reject) => {
        daemon.stdout!.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('\n')) resolve();
        });
        daemon.on('exit', (code) => reject(new Error(`the daemon exited (${code}) before reporting: ${out}`)));
      });
    } finally {
      try {
        process.kill(-daemon.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const { conmonPid } = JSON.parse(out) as { pid: number; conmonPid: number };
    await new Promise((r) => (daemon.exitCode !== null || daemon.signalCode !== null ? r(null) : daemon.once('exit', r)));
    assert.ok(await conmonAlive(conmonPid, f.id), 'conmon died with the daemon');
    const start = await rt(f, 'start', f.id);
    assert.equal(start.code, 0, start.stderr);
    assert.equal(await waitForExit(f.opts.exitDir, f.id, 10_000), 7);
    await waitUntil('conmon to exit', async () => !(await conmonAlive(conmonPid, f.id)));
    assert.match(await fs.readFile(f.opts.logPath, 'utf8'), /^\S+ stdout F survived$/m);
  });
});

test('an invalid config: the runtime says why, nothing is left', { skip: skipAll || runtimes.length === 0 }, async () => {
  await withFixture(runtimes[0]!, ['/bin/true'], async (f) => {
    // A rootfs that does not exist: the runtime refuses it at create.
    const cfg = JSON.parse(await fs.readFile(path.join(f.opts.bundleDir, 'config.json'), 'utf8')) as { root: { path: string } };
    cfg.root.path = path.join(f.base, 'no-such-rootfs');
    await fs.writeFile(path.join(f.opts.bundleDir, 'config.json'), JSON.stringify(cfg));
    await assert.rejects(conmonCreate(f.opts), (e: unknown) => {
      assert.ok(e instanceof ConmonError);
      assert.match(e.message, /no-such-rootfs|no such file/i);
      return true;
    });
    assert.deepEqual(processesMentioning(f.id), []);
    assert.equal(await ociState(f), null);
  });
});

test('a bundle without config.json is refused before conmon runs', { skip: skipAll || runtimes.length === 0 }, async () => {
  await withFixture(runtimes[0]!, ['/bin/true'], async (f) => {
    await fs.rm(path.join(f.opts.bundleDir, 'config.json'));
    await assert.rejects(conmonCreate(f.opts), /no readable config\.json/);
    assert.deepEqual(processesMentioning(f.id), []);
  });
});

test('a runtime that hangs in create: timeout, conmon and the runtime killed', { skip: skipAll || runtimes.length === 0 }, async () => {
  await withFixture(runtimes[0]!, ['/bin/true'], async (f) => {
    // Stands in for a runtime stuck in create (a hook, a frozen cgroup): create never returns.
    const fake = path.join(f.base, 'hung-runtime');
    const hungPid = path.join(f.base, 'hung.pid');
    await fs.writeFile(fake, `#!/bin/sh\ncase " $* " in *" create "*) echo $$ > ${hungPid}; exec sleep 1000 ;; esac\nexit 0\n`, { mode: 0o755 });
    const t0 = Date.now();
    await assert.rejects(conmonCreate({ ...f.opts, runtimePath: fake, timeoutMs: 1_500 }), (e: unknown) => {
      assert.ok(e instanceof ConmonError);
      assert.equal(e.timedOut, true);
      assert.match(e.message, /within 1500 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 < 10_000);
    await waitUntil('conmon to be gone', () => processesMentioning(f.id).length === 0);
    const pid = await readPid(hungPid);
    assert.ok(pid > 0, 'the fake runtime ran');
    await waitUntil('the hung runtime to be killed', () => !liveProcess(pid));
    assert.equal(existsSync(path.join(f.opts.socketDir, f.id)), false);
  });
});

/** Whether pid is a process that has not exited (zombies count as exited). */
function liveProcess(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

test('readExitCode and waitForExit on a missing exit directory', async () => {
  const dir = `/tmp/corral-conmon-noexit-${randomBytes(4).toString('hex')}`;
  assert.equal(await readExitCode(dir, 'abc'), null);
  const t0 = Date.now();
  assert.equal(await waitForExit(dir, 'abc', 200), null);
  assert.ok(Date.now() - t0 >= 190);
});

test('waitForExit sees a file written later, and ignores an empty one', async () => {
  const dir = `/tmp/corral-conmon-exit-${randomBytes(4).toString('hex')}`;
  await fs.mkdir(dir);
  try {
    const waiting = waitForExit(dir, 'c1', 5_000);
    await sleep(50);
    await fs.writeFile(path.join(dir, 'c1'), '');
    await sleep(50);
    await fs.writeFile(path.join(dir, 'c1'), '42');
    const t0 = Date.now();
    assert.equal(await waiting, 42);
    assert.ok(Date.now() - t0 < 1_000);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
