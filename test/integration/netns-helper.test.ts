/**
 * Needs root: builds the native helpers, then pins real network namespaces in a
 * temporary folder (never /var/run/netns) and checks them from the outside
 * with nsenter. Every test unmounts and deletes what it made, even on failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execChecked, execFile } from '../../src/util/exec.js';
import { nativeBinary, packageRoot } from '../../src/util/paths.js';
import {
  NetnsError,
  createPinnedNetns,
  isNetnsPinned,
  listCorralNetns,
  netnsPathFor,
  removePinnedNetns,
  removePins,
} from '../../src/network/netns.js';
import { waitFor } from '../helpers/wait.js';

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : 'needs root';
const SANDBOX_ID = 'f00dfeed0123456789abcdef0123456789abcdef0123456789abcdef01234567';

let built: Promise<void> | undefined;
function buildNative(): Promise<void> {
  built ??= execChecked('bash', [path.join(packageRoot(), 'scripts', 'build-native.sh')], { timeoutMs: 120_000 }).then(() => undefined);
  return built;
}

/** Mount points at or below `dir` in this process's mount namespace. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((m): m is string => m !== undefined)
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m === dir || m.startsWith(dir + '/'));
}

/** Runs `fn` with a fresh temp folder; afterwards lazily unmounts anything left below it and deletes it. */
async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-netns-it-'));
  try {
    await fn(dir);
  } finally {
    for (const m of mountsUnder(dir).reverse()) {
      await execFile('umount', ['--lazy', m]);
    }
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function inNetns(file: string, cmd: string[]): Promise<string> {
  return (await execChecked('nsenter', [`--net=${file}`, ...cmd])).stdout;
}

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(() => true, () => false);
}

test('create pins a netns with lo up and sysctls; O_EXCL; remove is idempotent', { skip }, async () => {
  await buildNative();
  await withTempDir(async (dir) => {
    const netnsDir = path.join(dir, 'netns'); // does not exist yet: the helper makes it 0755
    const file = netnsPathFor(netnsDir, SANDBOX_ID);
    const hostPortStart = readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8');

    await createPinnedNetns(file, { sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0', 'net.ipv4.ping_group_range': '0 2147483647' } });
    assert.equal((await fs.stat(netnsDir)).mode & 0o7777, 0o755);
    assert.equal(await isNetnsPinned(file), true);
    assert.deepEqual(await listCorralNetns(netnsDir), [file]);
    assert.deepEqual(mountsUnder(dir), [file]);

    const lo = await inNetns(file, ['ip', '-o', 'link', 'show', 'lo']);
    assert.match(lo, /<[^>]*\bUP\b[^>]*>/, `lo is up: ${lo}`);
    // A new netns: the only interface is lo.
    const links = (await inNetns(file, ['ip', '-o', 'link', 'show'])).trim().split('\n');
    assert.equal(links.length, 1, links.join('\n'));
    assert.equal((await inNetns(file, ['cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start'])).trim(), '0');
    assert.equal((await inNetns(file, ['cat', '/proc/sys/net/ipv4/ping_group_range'])).trim().split(/\s+/).join(' '), '0 2147483647');
    assert.equal(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'), hostPortStart, 'host sysctl untouched');
    const nsInode = (await fs.stat(file)).ino;
    assert.notEqual(nsInode, (await fs.stat('/proc/self/ns/net')).ino, 'not the host netns');

    // Creating the same path again fails and leaves the first pin alone.
    await assert.rejects(createPinnedNetns(file), (e: unknown) => {
      assert.ok(e instanceof NetnsError);
      assert.equal(e.step, 'create');
      assert.equal(e.code, 'EEXIST');
      assert.match(e.message, /File exists/);
      return true;
    });
    assert.equal(await isNetnsPinned(file), true);
    assert.equal((await fs.stat(file)).ino, nsInode, 'same namespace still pinned');
    assert.equal((await inNetns(file, ['cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start'])).trim(), '0');

    await removePinnedNetns(file);
    assert.equal(await exists(file), false);
    assert.equal(await isNetnsPinned(file), false);
    assert.deepEqual(mountsUnder(dir), []);
    await removePinnedNetns(file); // second remove: nothing to do, no error
    assert.deepEqual(await listCorralNetns(netnsDir), []);
  });
});

test('a failing create leaves no file, no mount and no folder it made', { skip }, async () => {
  await buildNative();
  await withTempDir(async (dir) => {
    // Bad sysctl name, in a folder that already exists.
    const file = path.join(dir, 'corral-badname');
    await assert.rejects(createPinnedNetns(file, { sysctls: { 'net.ipv4.no_such_sysctl_here': '1' } }), (e: unknown) => {
      assert.ok(e instanceof NetnsError);
      assert.equal(e.step, 'sysctl');
      assert.equal(e.code, 'ENOENT');
      assert.match(e.message, /net\.ipv4\.no_such_sysctl_here/);
      return true;
    });
    assert.equal(await exists(file), false);
    assert.deepEqual(mountsUnder(dir), []);

    // Bad sysctl value, in a folder the helper has to make: the folder goes too.
    const fresh = path.join(dir, 'fresh', 'netns');
    const file2 = path.join(fresh, 'corral-badvalue');
    await assert.rejects(createPinnedNetns(file2, { sysctls: { 'net.ipv4.ip_unprivileged_port_start': 'not-a-number' } }), (e: unknown) => {
      assert.ok(e instanceof NetnsError);
      assert.equal(e.step, 'sysctl');
      return true;
    });
    assert.equal(await exists(path.join(dir, 'fresh')), false);
    assert.deepEqual(mountsUnder(dir), []);

    // A name that would escape /proc/sys is refused before anything happens.
    await assert.rejects(createPinnedNetns(file, { sysctls: { '../../../etc/passwd': 'x' } }), (e: unknown) => {
      assert.ok(e instanceof NetnsError);
      assert.equal(e.step, 'args');
      return true;
    });
    assert.equal(await exists(file), false);
    assert.deepEqual(await fs.readdir(dir), []);
  });
});

test('removePinnedNetns deletes a stale unpinned file and tolerates a missing folder', { skip }, async () => {
  await buildNative();
  await withTempDir(async (dir) => {
    const stale = path.join(dir, 'corral-stale');
    await fs.writeFile(stale, '');
    assert.equal(await isNetnsPinned(stale), false);
    await removePinnedNetns(stale);
    assert.equal(await exists(stale), false);
    await removePinnedNetns(path.join(dir, 'no-such-dir', 'corral-x'));
  });
});

test('helper CLI: ipc/uts pins with hostname, check, multi-file remove', { skip }, async () => {
  await buildNative();
  const helper = nativeBinary('corral-nshelper');
  await withTempDir(async (dir) => {
    const net = path.join(dir, 'netns', 'corral-p');
    const ipc = path.join(dir, 'ipcns', 'corral-p');
    const uts = path.join(dir, 'utsns', 'corral-p');
    try {
      const r = await execFile(helper, ['create', '--path', net, '--ipc', ipc, '--uts', uts, '--hostname', 'corral-pod', '--sysctl', 'kernel.shmmni=1234']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { path: net, ipc, uts });
      assert.equal((await execChecked('nsenter', [`--uts=${uts}`, 'hostname'])).stdout.trim(), 'corral-pod');
      assert.notEqual(os.hostname(), 'corral-pod');
      assert.equal((await execChecked('nsenter', [`--ipc=${ipc}`, 'cat', '/proc/sys/kernel/shmmni'])).stdout.trim(), '1234');
      for (const f of [net, ipc, uts]) {
        const c = await execFile(helper, ['check', f]);
        assert.equal(c.code, 0);
        assert.deepEqual(JSON.parse(c.stdout), { pinned: true });
      }
      const missing = await execFile(helper, ['check', path.join(dir, 'nope')]);
      assert.equal(missing.code, 0);
      assert.deepEqual(JSON.parse(missing.stdout), { pinned: false });

      // --hostname without a new UTS namespace would rename the host: refused.
      const refused = await execFile(helper, ['create', '--path', path.join(dir, 'corral-h'), '--hostname', 'oops']);
      assert.equal(refused.code, 2);
      assert.equal(JSON.parse(refused.stdout).step, 'args');
      assert.equal(await exists(path.join(dir, 'corral-h')), false);
    } finally {
      const rm = await execFile(helper, ['remove', net, ipc, uts]);
      assert.equal(rm.code, 0, rm.stdout + rm.stderr);
    }
    for (const f of [net, ipc, uts]) assert.equal(await exists(f), false);
    assert.deepEqual(mountsUnder(dir), []);
    const again = await execFile(helper, ['remove', net, ipc, uts]);
    assert.equal(again.code, 0);
    assert.deepEqual(JSON.parse(again.stdout), { removed: true });
  });
});

test('host-network pods: IPC/UTS pins without a netns carry their sysctls; a sysctl outside the namespaces made is refused', { skip }, async () => {
  await buildNative();
  const helper = nativeBinary('corral-nshelper');
  await withTempDir(async (dir) => {
    const ipc = path.join(dir, 'sandbox', 'ipcns');
    const hostNet = await fs.readlink('/proc/self/ns/net');
    try {
      await createPinnedNetns(null, { ipcPath: ipc, sysctls: { 'kernel.shm_rmid_forced': '1', 'fs.mqueue.msg_max': '99' } });
      assert.equal(await isNetnsPinned(ipc), true);
      assert.equal((await execChecked('nsenter', [`--ipc=${ipc}`, 'cat', '/proc/sys/kernel/shm_rmid_forced'])).stdout.trim(), '1');
      assert.equal((await execChecked('nsenter', [`--ipc=${ipc}`, 'cat', '/proc/sys/fs/mqueue/msg_max'])).stdout.trim(), '99');
      assert.equal(readFileSync('/proc/sys/kernel/shm_rmid_forced', 'utf8').trim(), '0', 'host IPC sysctl untouched');
      assert.equal(await fs.readlink('/proc/self/ns/net'), hostNet);
    } finally {
      await removePinnedNetns(ipc);
    }
    assert.equal(await exists(ipc), false);

    // Without a netns of its own, a net.* sysctl would be the host's: refused before anything is made.
    const hostPortStart = readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8');
    const other = path.join(dir, 'other', 'ipcns');
    for (const sysctls of [{ 'net.ipv4.ip_unprivileged_port_start': '0' }, { 'kernel.hostname': 'x' }] as Record<string, string>[]) {
      await assert.rejects(createPinnedNetns(null, { ipcPath: other, sysctls }), (e: unknown) => e instanceof NetnsError && e.step === 'args' && /not in a namespace this call creates/.test(e.message));
    }
    const noIpc = await execFile(helper, ['create', '--path', path.join(dir, 'corral-n'), '--sysctl', 'kernel.shmmni=77']);
    assert.equal(noIpc.code, 2, 'an IPC sysctl without --ipc would be the host\'s');
    assert.equal(await exists(other), false);
    assert.equal(await exists(path.join(dir, 'corral-n')), false);
    assert.equal(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'), hostPortStart);
    await assert.rejects(createPinnedNetns(null, {}), /nothing to pin/);
    assert.deepEqual(mountsUnder(dir), []);
  });
});

// ---------- corral-pause ----------

function procStat(pid: number): { state: string; ppid: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, ppid: Number(rest[1]) };
  } catch {
    return undefined;
  }
}

/** Direct children of `ppid` with their state ('Z' = zombie), from a scan of /proc. */
function childrenOf(ppid: number): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = procStat(Number(name));
    if (st && st.ppid === ppid) out.push({ pid: Number(name), state: st.state });
  }
  return out;
}

/** True once `pid` has installed a SIGTERM handler (SigCgt bit 15), i.e. it will not die from the default action. */
function catchesSigterm(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status);
    return m !== null && (BigInt('0x' + m[1]) & (1n << 14n)) !== 0n;
  } catch {
    return false;
  }
}


function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await exited(child);
  }
}

test('corral-pause -v prints its version', async () => {
  await buildNative();
  const r = await execFile(nativeBinary('corral-pause'), ['-v']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^corral-pause \d+\.\d+\.\d+/);
  const bad = await execFile(nativeBinary('corral-pause'), ['--bogus']);
  assert.equal(bad.code, 2);
});

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  test(`corral-pause keeps running, then exits 0 quickly on ${sig}`, async () => {
    await buildNative();
    const child = spawn(nativeBinary('corral-pause'), [], { stdio: 'ignore' });
    try {
      await waitFor(() => catchesSigterm(child.pid!), { timeoutMs: 5000, what: 'pause to install its handlers' });
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(child.exitCode, null, 'still running');
      const t0 = Date.now();
      child.kill(sig);
      const { code, signal } = await exited(child);
      assert.equal(signal, null);
      assert.equal(code, 0);
      assert.ok(Date.now() - t0 < 1000, 'exits promptly');
    } finally {
      await killHard(child);
    }
  });
}

test('corral-pause reaps children it inherits', async () => {
  await buildNative();
  // sh starts a short-lived child, then becomes corral-pause, which inherits it.
  const child = spawn('sh', ['-c', `sleep 0.2 & exec ${nativeBinary('corral-pause')}`], { stdio: 'ignore' });
  try {
    await waitFor(() => catchesSigterm(child.pid!), { timeoutMs: 5000, what: 'pause to start' });
    await waitFor(() => childrenOf(child.pid!).length === 0, { timeoutMs: 5000, what: 'the sleep child to be reaped (no zombie)' });
    child.kill('SIGTERM');
    assert.deepEqual(await exited(child), { code: 0, signal: null });
  } finally {
    await killHard(child);
  }
});

test('corral-pause as PID 1 of a PID namespace: reaps and stops on SIGTERM', { skip }, async () => {
  await buildNative();
  const child = spawn('unshare', ['--pid', '--fork', '--kill-child', 'sh', '-c', `sleep 0.2 & exec ${nativeBinary('corral-pause')}`], { stdio: 'ignore' });
  try {
    let pausePid = 0;
    await waitFor(() => {
      const kids = childrenOf(child.pid!);
      pausePid = kids[0]?.pid ?? 0;
      return pausePid !== 0 && catchesSigterm(pausePid);
    }, { timeoutMs: 5000, what: 'pause (PID 1 inside) to start' });
    assert.match(readFileSync(`/proc/${pausePid}/status`, 'utf8'), /^NSpid:\s+\d+\s+1$/m, 'it is PID 1 in its namespace');
    await waitFor(() => childrenOf(pausePid).length === 0, { timeoutMs: 5000, what: 'the sleep child to be reaped' });
    process.kill(pausePid, 'SIGTERM');
    const { code, signal } = await exited(child);
    assert.equal(signal, null);
    assert.equal(code, 0, 'unshare reports the exit status of pause');
  } finally {
    await killHard(child);
  }
});

test('--shm mounts the pod\'s /dev/shm tmpfs in the same call; one remove unmounts it with the pins; a failure later undoes it', { skip }, async () => {
  await buildNative();
  await withTempDir(async (dir) => {
    const net = path.join(dir, 'corral-shm');
    const ipc = path.join(dir, 'sb', 'ipcns');
    const shm = path.join(dir, 'sb', 'shm');
    try {
      await createPinnedNetns(net, { ipcPath: ipc, shmPath: shm });
      const line = readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === shm);
      assert.ok(line, 'shm is mounted');
      assert.match(line!, /^shm \S+ tmpfs rw,nosuid,nodev,noexec,.*size=65536k/);
      assert.equal((await fs.stat(shm)).mode & 0o7777, 0o1777);
      assert.equal(await isNetnsPinned(ipc), true);
      await removePins([net, ipc, shm]);
      assert.deepEqual(mountsUnder(dir), []);
      for (const p of [net, ipc, shm]) assert.equal(await exists(p), false, `${p} removed`);
      await removePins([net, ipc, shm]); // gone is fine
      // A failure after the shm was mounted (a refused sysctl) leaves nothing of it.
      await assert.rejects(createPinnedNetns(net, { ipcPath: ipc, shmPath: shm, sysctls: { 'net.ipv4.ip_unprivileged_port_start': 'not-a-number' } }), NetnsError);
      assert.deepEqual(mountsUnder(dir), []);
      assert.equal(await exists(shm), false);
    } finally {
      await removePins([net, ipc, shm]).catch(() => {});
    }
  });
});
