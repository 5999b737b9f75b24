import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spawner, SpawnerUnavailableError } from '../../src/util/spawner.js';
import { execFile, execFileDirect, sharedSpawner, type ExecOptions } from '../../src/util/exec.js';
import { nativeBinary, packageRoot } from '../../src/util/paths.js';

const BIN = nativeBinary('corral-spawner');

function withSpawner(name: string, fn: (s: Spawner) => Promise<void>): void {
  test(name, async () => {
    assert.ok(existsSync(BIN), `${BIN} is missing: run scripts/build-native.sh`);
    const s = new Spawner(BIN);
    try {
      await fn(s);
    } finally {
      if (s.pid) process.kill(s.pid, 'SIGKILL');
    }
  });
}

/** Running (a zombie waiting for a reaper that is not us counts as gone); and its command name. */
function procState(pid: number): { alive: boolean; comm: string } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return { alive: state !== 'Z' && state !== 'X', comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) };
  } catch {
    return { alive: false, comm: '' };
  }
}

const alive = (pid: number) => procState(pid).alive;

withSpawner('a program gets argv, only the given environment, cwd and stdin; exit code and both outputs come back', async (s) => {
  const r = await s.run('sh', ['-c', 'echo "$1|$X|$HOME"; pwd; cat; echo oops >&2; exit 3', 'sh', 'two words'], {
    env: { PATH: '/usr/bin:/bin', X: 'x=1' },
    cwd: '/tmp',
    input: 'from stdin\n',
  });
  assert.deepEqual(r, { code: 3, signal: null, stdout: 'two words|x=1|\n/tmp\nfrom stdin\n', stderr: 'oops\n' });
});

withSpawner('programs are children of corral-spawner, not forks of this process', async (s) => {
  const r = await s.run('sh', ['-c', 'echo $PPID']);
  assert.equal(Number(r.stdout), s.pid);
  assert.notEqual(Number(r.stdout), process.pid);
});

test('execFile runs programs through the shared corral-spawner (this process is not forked)', async () => {
  const r = await execFile('sh', ['-c', 'echo $PPID']);
  assert.ok(sharedSpawner()?.pid, 'the shared spawner runs');
  assert.equal(Number(r.stdout), sharedSpawner()!.pid);
});

withSpawner('same as a direct spawn: new session, default signals, nothing blocked, only fds 0-2', async (s) => {
  // The spawner itself ignores SIGPIPE and blocks SIGCHLD; none of that may reach the program.
  // Each a program reading its own /proc entry (exec: no shell in between).
  const checks = ['exec cut -d" " -f1,6 /proc/self/stat', 'exec grep -E "^Sig(Blk|Ign)" /proc/self/status', 'exec ls -1 /proc/self/fd'];
  const via = await Promise.all(checks.map((c) => s.run('sh', ['-c', c])));
  const direct = await Promise.all(checks.map((c) => execFileDirect('sh', ['-c', c])));
  const [pid, sid] = via[0]!.stdout.trim().split(' ');
  assert.equal(sid, pid, 'the program leads a session of its own');
  assert.match(via[1]!.stdout, /^SigBlk:\s+0+\nSigIgn:\s+0+\n$/);
  assert.equal(via[1]!.stdout, direct[1]!.stdout);
  // fds 0-2 and the one ls opened (plus any fd this test process inherited without
  // O_CLOEXEC: a direct spawn passes those on as well), none of the spawner's own.
  assert.match(via[2]!.stdout, /^0\n1\n2\n/);
  assert.equal(via[2]!.stdout, direct[2]!.stdout);
});

withSpawner('a program that cannot be started rejects like Node (errno code), and the next call works', async (s) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spawner-'));
  try {
    const notExec = path.join(dir, 'plain');
    writeFileSync(notExec, 'data', { mode: 0o644 });
    for (const [file, opts, code] of [
      ['/nonexistent/prog', {}, 'ENOENT'],
      ['no-such-program-anywhere', {}, 'ENOENT'],
      [notExec, {}, 'EACCES'],
      ['plain', { env: { PATH: dir } }, 'EACCES'],
      ['true', { cwd: path.join(dir, 'missing') }, 'ENOENT'],
    ] as [string, ExecOptions, string][]) {
      const viaErr = await s.run(file, [], opts).then(() => undefined, (e: NodeJS.ErrnoException) => e);
      const directErr = await execFileDirect(file, [], opts).then(() => undefined, (e: NodeJS.ErrnoException) => e);
      assert.equal(viaErr?.code, code, `${file}: ${viaErr?.message}`);
      assert.equal(viaErr?.code, directErr?.code, `${file}: same code as a direct spawn`);
      assert.equal(viaErr?.message, `spawn ${file} ${code}`);
    }
    assert.equal((await s.run('true', [])).code, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

withSpawner('the timeout SIGKILLs the whole process group, so a background child holding the pipes dies too', async (s) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spawner-'));
  try {
    const pidFile = path.join(dir, 'bg.pid');
    const t0 = Date.now();
    const r = await s.run('sh', ['-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 300 });
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.code, null);
    assert.ok(Date.now() - t0 < 10_000, 'answered soon after the timeout');
    const bg = Number(readFileSync(pidFile, 'utf8'));
    for (let i = 0; i < 50 && alive(bg); i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(alive(bg), false, 'the background sleep was killed with its group');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

withSpawner('large input and output (beyond a pipe buffer), and many programs at once', async (s) => {
  const input = 'x'.repeat(3 << 20);
  const r = await s.run('sh', ['-c', 'wc -c; head -c 5000000 /dev/zero'], { input });
  assert.equal(r.stdout.slice(0, r.stdout.indexOf('\n')).trim(), String(3 << 20));
  assert.equal(r.stdout.length - r.stdout.indexOf('\n') - 1, 5_000_000);
  // A program that exits without reading its input: no EPIPE anywhere, and the spawner lives on.
  assert.equal((await s.run('true', [], { input })).code, 0);
  const all = await Promise.all(Array.from({ length: 64 }, (_, i) => s.run('sh', ['-c', `echo ${i}; echo e${i} >&2`])));
  all.forEach((x, i) => assert.deepEqual(x, { code: 0, signal: null, stdout: `${i}\n`, stderr: `e${i}\n` }));
});

withSpawner('output beyond 16 MiB per stream is dropped, with a note; the program still runs to its end', async (s) => {
  const r = await s.run('sh', ['-c', 'head -c 17000000 /dev/zero | tr "\\0" x; echo done >&2'], { timeoutMs: 30_000 });
  assert.equal(r.code, 0);
  assert.equal(r.stdout.slice(0, 16 << 20), 'x'.repeat(16 << 20));
  assert.equal(r.stdout.slice(16 << 20), `\n[corral-spawner: output cut at ${16 << 20} bytes]\n`);
  assert.equal(r.stderr, 'done\n');
});

withSpawner('NUL bytes are refused before the helper sees them (it keeps running)', async (s) => {
  await s.run('true', []);
  const pid = s.pid;
  for (const [args, opts] of [[['a\0b'], {}], [[], { env: { A: 'x\0y' } }], [[], { cwd: '/tmp\0' }]] as [string[], ExecOptions][]) {
    await assert.rejects(s.run('echo', args, opts), (e: NodeJS.ErrnoException) => e.code === 'ERR_INVALID_ARG_VALUE');
  }
  assert.equal((await s.run('echo', ['ok'])).stdout, 'ok\n');
  assert.equal(s.pid, pid);
});

withSpawner('when the helper dies, the calls in flight fail with a reason and the next call starts a new one', async (s) => {
  await s.run('true', []);
  const first = s.pid!;
  const inFlight = s.run('sleep', ['5']);
  process.kill(first, 'SIGKILL');
  await assert.rejects(inFlight, /running sleep: corral-spawner was killed by SIGKILL/);
  const r = await s.run('sh', ['-c', 'echo $PPID']);
  assert.notEqual(s.pid, first);
  assert.equal(Number(r.stdout), s.pid);
});

test('the helper does not keep a process alive once its calls are done, and ends with it', () => {
  const modUrl = new URL(`file://${path.join(packageRoot(), 'dist/src/util/exec.js')}`).href;
  const script = `import(${JSON.stringify(modUrl)}).then(async (m) => { const r = await m.execFile('sh', ['-c', 'echo $PPID']); console.log(r.stdout.trim()); });`;
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(out.status, 0, `exited by itself: ${out.stderr}`);
  const spawnerPid = Number(out.stdout.trim());
  assert.ok(spawnerPid > 0);
  for (let i = 0; i < 50 && alive(spawnerPid); i++) spawnSync('sleep', ['0.02']);
  // Gone, or a PID already reused by something that is not a spawner.
  const after = procState(spawnerPid);
  assert.ok(!after.alive || after.comm !== 'corral-spawner', 'the spawner ended with its process');
});

test('a helper that cannot be run fails the calls with SpawnerUnavailableError (none of them ran: execFile then runs them directly)', async () => {
  const s = new Spawner('/nonexistent/corral-spawner');
  await assert.rejects(s.run('true', []), (e: Error) => e instanceof SpawnerUnavailableError && /could not run/.test(e.message));
  // A helper that runs and dies is not that: its calls may have run.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spawner-'));
  try {
    const crashing = path.join(dir, 'crash');
    writeFileSync(crashing, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
    const c = new Spawner(crashing);
    await assert.rejects(c.run('true', []), (e: Error) => !(e instanceof SpawnerUnavailableError) && /exited with status 3/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('encodeSpawnRequest: the frame native/spawner.c reads, byte for byte (multi-byte UTF-8, input, environment without undefined values)', async () => {
  const { encodeSpawnRequest } = await import('../../src/util/spawner.js');
  const frame = encodeSpawnRequest(7, '/bin/é', ['a b', '🙂', ''], { env: { K: 'v=1', GONE: undefined, Ü: 'ß' }, cwd: '/tmp/ä', input: Buffer.from([0, 1, 2]), timeoutMs: 1500.2 });
  let off = 0;
  const u32 = () => {
    const n = frame.readUInt32LE(off);
    off += 4;
    return n;
  };
  const str = () => {
    const n = u32();
    const s = frame.subarray(off, off + n);
    off += n;
    return s.toString('utf8');
  };
  assert.equal(u32(), frame.length - 4, 'length of the rest');
  assert.deepEqual([u32(), u32(), u32()], [7, 1501, 1], 'id, timeout (rounded up), has input');
  const argc = u32();
  assert.deepEqual(Array.from({ length: argc }, str), ['/bin/é', 'a b', '🙂', '']);
  const envc = u32();
  assert.deepEqual(Array.from({ length: envc }, str), ['K=v=1', 'Ü=ß']);
  assert.equal(str(), '/tmp/ä');
  const inputLen = u32();
  assert.deepEqual([...frame.subarray(off, off + inputLen)], [0, 1, 2]);
  assert.equal(off + inputLen, frame.length, 'nothing after the input');
  assert.throws(() => encodeSpawnRequest(1, 'x', ['a\0b'], {}), { code: 'ERR_INVALID_ARG_VALUE' });
});
