/**
 * The kubelet-facing side of container logs, through the CRI with real conmon: log
 * rotation as kubelet does it (rename, ReopenContainerLog, new lines in a new file, the old
 * one closed by conmon), ReopenContainerLog's refusals, the CRI log format conmon writes
 * (full lines F, long lines split into P records), and the container_log_size_max cap.
 * Nothing is left behind.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { eventually, sleep } from '../helpers/wait.js';

/** The cap this daemon runs with; the other tests write far less than this. */
const LOG_CAP = 64 * 1024;

let reg: TestRegistry;
let d: TestDaemon;
let image: string;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox({ daemon: { extraToml: `container_log_size_max = ${LOG_CAP}` } }));
});

/** Pod log directories the tests made (kubelet's to remove, so ours here). */
const logDirs: string[] = [];

afterEach(async () => {
  for (const p of (await d.rpc('ListPodSandbox', {})).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
  for (const dir of logDirs.splice(0)) await fs.rm(dir, { recursive: true, force: true });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

/** A pod, and a container in it running `sh -c script` whose log is <name>.log in the pod's log directory. */
async function podWithContainer(name: string, script: string, start = true) {
  const cfg = podConfig();
  logDirs.push(cfg.logDirectory);
  await fs.mkdir(cfg.logDirectory, { recursive: true });
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: cfg });
  const config = { metadata: { name, attempt: 0 }, image: { image }, command: ['/bin/busybox', 'sh', '-c', script], logPath: `${name}.log`, linux: {} };
  const { containerId } = await d.rpc('CreateContainer', { podSandboxId, config, sandboxConfig: cfg });
  if (start) await d.rpc('StartContainer', { containerId });
  return { podSandboxId, containerId: containerId as string, logPath: path.join(cfg.logDirectory, `${name}.log`), logDirectory: cfg.logDirectory as string };
}

interface LogRecord {
  time: string;
  stream: 'stdout' | 'stderr';
  tag: 'P' | 'F';
  text: string;
}

/** kubelet's CRI log format: `<RFC3339Nano> <stdout|stderr> <P|F> <text>` per line; throws on any other line. */
function parseCriLog(text: string): LogRecord[] {
  const lines = text.split('\n');
  assert.equal(lines.pop(), '', 'the log ends with a newline');
  return lines.map((line) => {
    const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) (P|F) (.*)$/s.exec(line);
    assert.ok(m, `not a CRI log line: ${JSON.stringify(line.slice(0, 120))}`);
    assert.ok(!Number.isNaN(Date.parse(m[1]!)), `not a timestamp: ${m[1]}`);
    return { time: m[1]!, stream: m[2] as LogRecord['stream'], tag: m[3] as LogRecord['tag'], text: m[4]! };
  });
}

const ticks = (text: string) => parseCriLog(text).map((r) => /^tick (\d+)$/.exec(r.text)).filter((m) => m !== null).map((m) => Number(m[1]));

async function conmonPid(containerId: string): Promise<number> {
  const pid = Number((await fs.readFile(path.join(d.stateDir, 'containers', containerId, 'conmon.pid'), 'utf8')).trim());
  assert.ok(pid > 0, 'conmon pid file');
  return pid;
}

/** The files a process has open (what its fds point at). */
async function openFiles(pid: number): Promise<string[]> {
  const fds = await fs.readdir(`/proc/${pid}/fd`);
  const targets = await Promise.all(fds.map((fd) => fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
  return targets.filter(Boolean);
}

test('log rotation as kubelet does it: rename, ReopenContainerLog, new lines in a new file, the old one closed, no line lost', async () => {
  const { containerId, logPath } = await podWithContainer('ticker', 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.05; done');
  await eventually(async () => assert.ok(ticks(await fs.readFile(logPath, 'utf8')).length >= 3), { what: 'the first lines in the log' });
  const pid = await conmonPid(containerId);
  assert.ok((await openFiles(pid)).includes(logPath), 'conmon writes the log');

  const rotated = `${logPath}.20260101-000000`;
  await fs.rename(logPath, rotated);
  await d.rpc('ReopenContainerLog', { containerId: containerId.slice(0, 12) });
  // What critest checks right after the call: the new file is already there.
  await fs.access(logPath);
  const fds = await openFiles(pid);
  assert.ok(!fds.includes(rotated), `conmon still holds the rotated file: ${fds.join(', ')}`);
  assert.ok(fds.includes(logPath), 'conmon writes the new file');

  await eventually(async () => assert.ok(ticks(await fs.readFile(logPath, 'utf8')).length >= 3), { what: 'new lines in the new file' });
  const oldSize = (await fs.stat(rotated)).size;
  await sleep(300);
  assert.equal((await fs.stat(rotated)).size, oldSize, 'nothing more lands in the rotated file');
  const oldTicks = ticks(await fs.readFile(rotated, 'utf8'));
  const newTicks = ticks(await fs.readFile(logPath, 'utf8'));
  // Lines written between the rename and the reopen went to the old file: together, every line once.
  assert.equal(newTicks[0], oldTicks[oldTicks.length - 1]! + 1, `the new file continues the old one (old ends ${oldTicks.at(-1)}, new starts ${newTicks[0]})`);

  // Asked again without a rename (kubelet retrying): nothing to reopen, the file keeps its lines.
  const kept = ticks(await fs.readFile(logPath, 'utf8'));
  await d.rpc('ReopenContainerLog', { containerId });
  assert.deepEqual(ticks(await fs.readFile(logPath, 'utf8')).slice(0, kept.length), kept, 'the file kept its lines');

  // Rotated again, three callers at once: one new file, every line once.
  const rotated2 = `${logPath}.20260101-000001`;
  await fs.rename(logPath, rotated2);
  await Promise.all([0, 1, 2].map(() => d.rpc('ReopenContainerLog', { containerId })));
  await eventually(async () => assert.ok(ticks(await fs.readFile(logPath, 'utf8')).length >= 3), { what: 'new lines after the second rotation' });
  await sleep(300);
  const old2 = ticks(await fs.readFile(rotated2, 'utf8'));
  const new2 = ticks(await fs.readFile(logPath, 'utf8'));
  assert.equal(new2[0], old2.at(-1)! + 1, `the new file continues the rotated one (old ends ${old2.at(-1)}, new starts ${new2[0]})`);
  assert.ok(!(await openFiles(pid)).includes(rotated2), 'conmon let go of the second rotated file');
});

test('ReopenContainerLog refuses what has no log to reopen, and a missing log directory before conmon could die of it', async () => {
  await assert.rejects(d.rpc('ReopenContainerLog', { containerId: '' }), (e: any) => e.code === status.INVALID_ARGUMENT);
  await assert.rejects(d.rpc('ReopenContainerLog', { containerId: 'f'.repeat(64) }), (e: any) => e.code === status.NOT_FOUND);

  const created = await podWithContainer('created', 'sleep 60', false);
  await assert.rejects(d.rpc('ReopenContainerLog', { containerId: created.containerId }), (e: any) => e.code === status.FAILED_PRECONDITION && /not running/.test(e.details));

  const done = await podWithContainer('done', 'echo bye');
  await eventually(async () => assert.equal((await d.rpc('ContainerStatus', { containerId: done.containerId })).status.state, 'CONTAINER_EXITED'), { what: 'the container to exit' });
  await assert.rejects(d.rpc('ReopenContainerLog', { containerId: done.containerId }), (e: any) => e.code === status.FAILED_PRECONDITION && /not running/.test(e.details));

  const live = await podWithContainer('live', 'while true; do echo alive; sleep 0.1; done');
  await eventually(async () => assert.match(await fs.readFile(live.logPath, 'utf8'), /alive/), { what: 'the first line' });
  const pid = await conmonPid(live.containerId);
  await fs.rm(live.logDirectory, { recursive: true, force: true });
  await assert.rejects(d.rpc('ReopenContainerLog', { containerId: live.containerId }), (e: any) => e.code === status.FAILED_PRECONDITION && e.details.includes(live.logDirectory));
  await sleep(200);
  await fs.access(`/proc/${pid}`); // conmon, not asked, lives on
  assert.equal((await d.rpc('ContainerStatus', { containerId: live.containerId })).status.state, 'CONTAINER_RUNNING');
  // Once kubelet has the directory back, rotation works again.
  await fs.mkdir(live.logDirectory, { recursive: true });
  await d.rpc('ReopenContainerLog', { containerId: live.containerId });
  await eventually(async () => assert.match(await fs.readFile(live.logPath, 'utf8'), /alive/), { what: 'lines in the recreated directory' });
});

test('the CRI log format: full lines tagged F, a 20 KB line without newline split into P records, stdout and stderr apart', async () => {
  const script = '/bin/busybox head -c 20480 /dev/zero | /bin/busybox tr "\\0" x; sleep 1; echo normal line; echo err line >&2';
  const { containerId, logPath } = await podWithContainer('format', script);
  await eventually(async () => assert.equal((await d.rpc('ContainerStatus', { containerId })).status.state, 'CONTAINER_EXITED'), { what: 'the container to exit' });
  const records = parseCriLog(await fs.readFile(logPath, 'utf8'));
  const out = records.filter((r) => r.stream === 'stdout');
  const err = records.filter((r) => r.stream === 'stderr');
  const partial = out.filter((r) => r.tag === 'P');
  // conmon reads at most 8 KiB at a time; each read without a newline is one P record.
  assert.ok(partial.length >= 3, `a 20 KB line makes at least 3 P records, got ${partial.length}`);
  assert.ok(partial.every((r) => r.text.length <= 8192 && /^x+$/.test(r.text)));
  assert.deepEqual(out.map((r) => r.tag), [...partial.map(() => 'P'), 'F'], 'P records, then the F that ends the line');
  // kubelet joins P records up to the next F: the 20 KB, then the line that ended it.
  assert.equal(out.map((r) => r.text).join(''), 'x'.repeat(20480) + 'normal line');
  assert.deepEqual(err.map((r) => [r.tag, r.text]), [['F', 'err line']]);
  const times = records.map((r) => Date.parse(r.time));
  assert.deepEqual(times, [...times].sort((a, b) => a - b), 'timestamps in order');
});

test('container_log_size_max: a container writing far more keeps its log file under the cap, with its newest lines', async () => {
  // About 500 KB of log: 4000 lines of 100 bytes, each with its timestamp prefix.
  const pad = 'y'.repeat(80);
  const script = `i=0; while [ $i -lt 4000 ]; do echo "line $i ${pad}"; i=$((i+1)); done; echo last line`;
  const { containerId, logPath } = await podWithContainer('chatty', script);
  await eventually(async () => assert.equal((await d.rpc('ContainerStatus', { containerId })).status.state, 'CONTAINER_EXITED'), { timeoutMs: 60_000, what: 'the container to exit' });
  const text = await fs.readFile(logPath, 'utf8');
  assert.ok(Buffer.byteLength(text) <= LOG_CAP, `log file is ${Buffer.byteLength(text)} bytes, over the cap of ${LOG_CAP}`);
  const records = parseCriLog(text);
  assert.equal(records.at(-1)?.text, 'last line', 'the newest line is kept');
  assert.ok(!records.some((r) => r.text.startsWith('line 0 ')), 'the oldest lines made room');
});
