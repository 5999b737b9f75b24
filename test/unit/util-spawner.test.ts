import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

withSpawner('programs in flight die with the helper (no CNI plugin or helper runs on unsupervised)', async (s) => {
  // The program writes its PID, then waits; the spawner is killed under it.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-spawner-'));
  try {
    const pidFile = path.join(dir, 'pid');
    const inFlight = s.run('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 30`]);
    inFlight.catch(() => undefined);
    let program = 0;
    for (let i = 0; i < 200 && !program; i++) {
      program = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
      if (!program) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(program > 0, 'the program started');
    assert.ok(alive(program));
    process.kill(s.pid!, 'SIGKILL');
    await assert.rejects(inFlight, /corral-spawner was killed/);
    for (let i = 0; i < 200 && alive(program); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(alive(program), false, 'the program was killed with its spawner');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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

withSpawner('start(): stdin streamed in several frames reaches the program in order, and end() closes it', async (s) => {
  const p = s.start('sh', ['-c', 'cat; echo "eof after cat"'], { input: 'first\n' });
  for (let i = 0; i < 50; i++) p.write(`line ${i}\n`);
  p.write(Buffer.from('bytes\n'));
  await new Promise((res) => setTimeout(res, 50)); // the program is waiting on an open pipe meanwhile
  p.end('last\n');
  p.write('after the end: dropped\n');
  const r = await p.result;
  const want = ['first', ...Array.from({ length: 50 }, (_, i) => `line ${i}`), 'bytes', 'last', 'eof after cat'].join('\n') + '\n';
  assert.deepEqual(r, { code: 0, signal: null, stdout: want, stderr: '' });
});

withSpawner('start(): a program whose stdin is never ended waits for it; end() with nothing written gives it EOF', async (s) => {
  const p = s.start('sh', ['-c', 'read x; echo "got:$x"; cat; echo done']);
  const early = await Promise.race([p.result.then(() => 'finished'), new Promise((res) => setTimeout(() => res('waiting'), 300))]);
  assert.equal(early, 'waiting', 'stdin stays open until end()');
  p.end();
  assert.deepEqual(await p.result, { code: 0, signal: null, stdout: 'got:\ndone\n', stderr: '' });
});

withSpawner('start(): kill() SIGKILLs the whole process group and the result reports the signal', async (s) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spawner-'));
  try {
    const pidFile = path.join(dir, 'bg.pid');
    const p = s.start('sh', ['-c', `sleep 30 & echo $! > ${pidFile}; cat`]);
    for (let i = 0; i < 250 && !existsSync(pidFile); i++) await new Promise((res) => setTimeout(res, 20));
    const bg = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(bg > 0 && alive(bg));
    p.kill();
    const r = await p.result;
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.code, null);
    for (let i = 0; i < 50 && alive(bg); i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(alive(bg), false, 'the background sleep was killed with its group');
    p.kill(); // after the end: nothing happens
    assert.equal((await s.run('echo', ['still here'])).stdout, 'still here\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

withSpawner('start(): a program that does not read its stdin blocks no other job; past 1 MiB queued it is killed', async (s) => {
  const stuck = s.start('sleep', ['30']);
  // A pipe holds 64 KiB: the rest waits in the helper, which meanwhile serves other jobs.
  const chunk = 'y'.repeat(64 * 1024);
  for (let i = 0; i < 8; i++) stuck.write(chunk);
  const others = await Promise.all(Array.from({ length: 8 }, (_, i) => s.run('sh', ['-c', `echo ${i}`])));
  others.forEach((r, i) => assert.equal(r.stdout, `${i}\n`));
  const streamed = s.start('cat', []);
  streamed.write('through\n');
  streamed.end();
  assert.equal((await streamed.result).stdout, 'through\n');
  const early = await Promise.race([stuck.result.then(() => 'finished'), new Promise((res) => setTimeout(() => res('running'), 200))]);
  assert.equal(early, 'running', '576 KiB queued: still within the bound');
  for (let i = 0; i < 16; i++) stuck.write(chunk);
  const r = await stuck.result;
  assert.equal(r.signal, 'SIGKILL');
  assert.match(r.stderr, /killed: more than 1048576 bytes of stdin waited for it/);
});

test('startProgram: through the shared spawner (this process is not forked), stdin streamed, kill reported', async () => {
  const { startProgram } = await import('../../src/util/exec.js');
  const p = startProgram('sh', ['-c', 'echo $PPID; cat']);
  p.write('a\n');
  p.end('b\n');
  const r = await p.result;
  assert.equal(r.stdout, `${sharedSpawner()!.pid}\na\nb\n`);
  const k = startProgram('sleep', ['30']);
  k.kill();
  assert.equal((await k.result).signal, 'SIGKILL');
});

test('startProgramDirect: the same contract with a direct spawn (the fallback when the helper cannot be run)', async () => {
  const { startProgramDirect } = await import('../../src/util/exec.js');
  const p = startProgramDirect('sh', ['-c', 'echo $PPID; cat'], { input: 'a\n' });
  p.write('b\n');
  p.end('c\n');
  assert.equal((await p.result).stdout, `${process.pid}\na\nb\nc\n`);
  const k = startProgramDirect('sh', ['-c', 'sleep 30 & wait']);
  k.kill();
  assert.equal((await k.result).signal, 'SIGKILL');
  await assert.rejects(startProgramDirect('/nonexistent/prog', []).result, { code: 'ENOENT' });
});

test('encodeSpawnerControl and encodeStreamingSpawnRequest: the frames native/spawner.c reads', async () => {
  const { encodeSpawnerControl, encodeStreamingSpawnRequest, encodeSpawnRequest, SpawnerControl } = await import('../../src/util/spawner.js');
  const data = encodeSpawnerControl(SpawnerControl.StdinData, 9, Buffer.from('12\n'));
  assert.deepEqual([data.readUInt32LE(0), data.readUInt32LE(4), data.readUInt32LE(8), data.readUInt32LE(12)], [15, 0, 1, 9]);
  assert.equal(data.subarray(16).toString(), '12\n');
  const kill = encodeSpawnerControl(SpawnerControl.Kill, 9);
  assert.deepEqual([...kill], [12, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0]);
  // The same frame as a plain request with an (empty) input, but for flag bit 1.
  const opts = { env: { A: 'b' } };
  const streaming = encodeStreamingSpawnRequest(3, 'cat', [], opts);
  const plain = encodeSpawnRequest(3, 'cat', [], { ...opts, input: '' });
  assert.equal(streaming.readUInt32LE(12), 3);
  assert.equal(plain.readUInt32LE(12), 1);
  streaming.writeUInt32LE(1, 12);
  assert.deepEqual(streaming, plain);
});

test('startProgram: when the helper cannot be run, the program runs directly and gets what was written meanwhile', () => {
  // A package of exec.js and its imports whose corral-spawner exists but cannot be executed.
  const pkg = mkdtempSync(path.join(os.tmpdir(), 'spawner-pkg-'));
  try {
    const utilDir = path.join(pkg, 'dist/src/util');
    mkdirSync(utilDir, { recursive: true });
    mkdirSync(path.join(pkg, 'dist/native'));
    writeFileSync(path.join(pkg, 'package.json'), '{"type":"module"}');
    for (const f of ['exec.js', 'paths.js', 'spawner.js']) copyFileSync(path.join(packageRoot(), 'dist/src/util', f), path.join(utilDir, f));
    writeFileSync(path.join(pkg, 'dist/native/corral-spawner'), 'not a program', { mode: 0o644 });
    const modUrl = new URL(`file://${path.join(utilDir, 'exec.js')}`).href;
    const script = `import(${JSON.stringify(modUrl)}).then(async (m) => {
      const p = m.startProgram('sh', ['-c', 'echo "$PPID"; cat'], { input: 'a\\n' });
      p.write('b\\n');
      p.end('c\\n');
      const r = await p.result;
      const k = m.startProgram('sleep', ['30']);
      k.kill();
      console.log(JSON.stringify({ me: process.pid, r, killed: (await k.result).signal, spawner: m.sharedSpawner() }));
    });`;
    const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(out.status, 0, out.stderr);
    const got = JSON.parse(out.stdout) as { me: number; r: { stdout: string; code: number }; killed: string; spawner: unknown };
    assert.equal(got.r.code, 0);
    assert.equal(got.r.stdout, `${got.me}\na\nb\nc\n`, 'a direct child, with every write in order');
    assert.equal(got.killed, 'SIGKILL');
    assert.equal(got.spawner, null, 'from then on without the helper');
  } finally {
    rmSync(pkg, { recursive: true, force: true });
  }
});
