/**
 * The container commands of the `corral` executable against a real daemon: ps (listing and
 * its filters), logs (the CRI log file read back as lines: a >16 KiB line conmon split into
 * partial records comes out whole; --tail; --timestamps; -f follows new lines across a
 * kubelet-style rotation and ends when the container stops), stats and statsp (figures of a
 * container burning CPU, and of the pod's network, that move).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { eventually, waitFor } from '../helpers/wait.js';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';

const mainJs = path.join(packageRoot(), 'dist/src/cli/main.js');
let reg: TestRegistry;
let d: TestDaemon;
let image: string;
let ep: string[];
const corral = (...args: string[]) => execFile(process.execPath, [mainJs, ...args, ...ep], { timeoutMs: 60_000 });

/** The pod every test uses, and its containers by name. */
let pod: { podSandboxId: string; sandboxConfig: any; name: string; logDirectory: string };
const ids: Record<string, string> = {};
const LONG = 20 * 1024;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox());
  ep = ['-r', `unix://${d.socket}`];
  const cfg = podConfig();
  await fs.mkdir(cfg.logDirectory, { recursive: true });
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: cfg });
  pod = { podSandboxId, sandboxConfig: cfg, name: cfg.metadata.name, logDirectory: cfg.logDirectory };
  const sh = (script: string) => ['/bin/busybox', 'sh', '-c', script];
  ids.burner = await startContainer(d, pod, image, 'burner', sh('while :; do :; done'), { labels: { role: 'burn' } });
  ids.ticker = await startContainer(d, pod, image, 'ticker', sh('i=0; while true; do echo "tick $i"; i=$((i+1)); /bin/busybox sleep 0.05; done'));
  // A 20 KiB line (conmon reads 8 KiB at a time: P records), a short one, one on stderr; then exits.
  ids.long = await startContainer(d, pod, image, 'long', sh(`/bin/busybox head -c ${LONG} /dev/zero | /bin/busybox tr "\\0" x; echo; echo short line; echo err line >&2`));
  await eventually(async () => assert.equal((await d.rpc('ContainerStatus', { containerId: ids.long })).status.state, 'CONTAINER_EXITED'), { what: 'the long-line container to exit' });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (pod) await fs.rm(pod.logDirectory, { recursive: true, force: true });
});

test('ps: the running containers, -a all of them, and each filter', async () => {
  const r = await corral('ps');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^CONTAINER\s+IMAGE\s+CREATED\s+STATE\s+NAME\s+ATTEMPT\s+POD ID\s+POD$/);
  assert.equal(lines.length, 3, r.stdout);
  assert.match(r.stdout, new RegExp(`^${ids.burner!.slice(0, 13)}\\s+${image.replace(/[.]/g, '\\.')}\\s+\\d+ seconds ago\\s+Running\\s+burner\\s+0\\s+${pod.podSandboxId.slice(0, 13)}\\s+${pod.name}$`, 'm'));
  assert.doesNotMatch(r.stdout, /\blong\b/);

  const all = await corral('ps', '-a');
  assert.match(all.stdout, new RegExp(`^${ids.long!.slice(0, 13)}\\s.*\\sExited\\s+long\\s`, 'm'));
  // Newest first, as crictl sorts.
  assert.deepEqual((await corral('ps', '-aq')).stdout.trim().split('\n'), [ids.long, ids.ticker, ids.burner]);

  const q = async (...args: string[]) => {
    const x = await corral('ps', '-q', ...args);
    assert.equal(x.code, 0, x.stderr);
    return x.stdout.trim().split('\n').filter(Boolean).sort();
  };
  assert.deepEqual(await q('--name', '^bur'), [ids.burner]);
  assert.deepEqual(await q('-a', '--name', 'long|tick'), [ids.long, ids.ticker].sort());
  assert.deepEqual(await q('--state', 'exited'), [ids.long]);
  assert.deepEqual(await q('--label', 'role=burn'), [ids.burner]);
  assert.deepEqual(await q('--label', 'role=none'), []);
  assert.deepEqual(await q('--id', ids.ticker!.slice(0, 10)), [ids.ticker]);
  assert.deepEqual(await q('-l'), [ids.long], '--latest: the newest in any state');
  assert.deepEqual(await q('-n', '2'), [ids.long, ids.ticker].sort());
  assert.match((await corral('ps', '--no-trunc')).stdout, new RegExp(`^${ids.burner}\\s.*\\s${pod.podSandboxId}\\s`, 'm'));
  assert.deepEqual(await q('-a', '--pod', pod.name), [ids.burner, ids.long, ids.ticker].sort(), 'a pod by its name');
  assert.deepEqual(await q('-a', '-p', pod.podSandboxId.slice(0, 8)), [ids.burner, ids.long, ids.ticker].sort(), 'a pod by ID prefix');

  const json = JSON.parse((await corral('ps', '-a', '-o', 'json')).stdout);
  assert.deepEqual(json.containers.map((c: any) => c.metadata.name).sort(), ['burner', 'long', 'ticker']);

  const badPod = await corral('ps', '--pod', 'no-such-pod');
  assert.equal(badPod.code, 1);
  assert.match(badPod.stderr, /no pod sandbox has the ID, ID prefix or name "no-such-pod" \(see: corral pods\)/);
  const badState = await corral('ps', '--state', 'sleeping');
  assert.equal(badState.code, 1);
  assert.match(badState.stderr, /--state must be one of created, running, exited, unknown/);
});

test('logs: lines as written, the 20 KiB line joined from its partial records, stdout and stderr apart; --tail, --timestamps; by name or ID prefix', async () => {
  // The file really holds the long line as several P records: what the joining undoes.
  const file = await fs.readFile(path.join(pod.logDirectory, 'long.log'), 'utf8');
  assert.ok(file.split('\n').filter((l) => / stdout P /.test(l)).length >= 2, 'conmon split the long line into P records');

  for (const ref of ['long', ids.long!.slice(0, 8)]) {
    const r = await corral('logs', ref);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${'x'.repeat(LONG)}\nshort line\n`, `logs ${ref}`);
    assert.equal(r.stderr, 'err line\n');
  }
  // The last two lines: short line and err line; --tail 3 brings the whole long line back.
  const t2 = await corral('logs', '--tail', '2', 'long');
  assert.equal(t2.stdout, 'short line\n');
  assert.equal(t2.stderr, 'err line\n');
  const t3 = await corral('logs', '--tail', '3', 'long');
  assert.equal(t3.stdout, `${'x'.repeat(LONG)}\nshort line\n`);
  assert.equal((await corral('logs', '--tail', '0', 'long')).stdout, '');

  const ts = await corral('logs', '-t', 'long');
  const lines = ts.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 2, 'one timestamp per line, the long line included');
  for (const l of lines) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (x{20480}|short line)$/);

  const missing = await corral('logs', 'no-such-container');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no container has the ID, ID prefix or name "no-such-container" \(see: corral ps -a\)/);
});

test('logs --since, --limit-bytes and --previous (attempt 1 in kubelet\'s <name>/<attempt>.log layout, attempt 0 written before)', async () => {
  // --since: a time after every line prints nothing; one before all of them prints everything.
  assert.equal((await corral('logs', '--since', '2099-01-01T00:00:00Z', 'long')).stdout, '');
  const recent = await corral('logs', '--since', '1h', 'long');
  assert.equal(recent.code, 0, recent.stderr);
  assert.equal(recent.stdout, `${'x'.repeat(LONG)}\nshort line\n`);
  const limited = await corral('logs', '--limit-bytes', '100', 'long');
  assert.equal(limited.code, 0, limited.stderr);
  assert.equal(limited.stdout + limited.stderr, 'x'.repeat(100), 'the first 100 bytes, then it stops');
  const bad = await corral('logs', '--since', 'yesterday', 'long');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--since must be an RFC 3339 time/);
  const first = await corral('logs', '--previous', 'long');
  assert.equal(first.code, 1);
  assert.match(first.stderr, /is its pod's first instance \(attempt 0\): there is no previous one/);

  // A restarted container as kubelet makes it: attempt 1, its log app/1.log; app/0.log is the first instance's.
  await fs.mkdir(path.join(pod.logDirectory, 'app'), { recursive: true });
  await fs.writeFile(path.join(pod.logDirectory, 'app', '0.log'), '2026-12-02T15:54:23.000000000+00:00 stdout F from the first instance\n');
  const id = await startContainer(d, pod, image, 'app', ['/bin/busybox', 'sh', '-c', 'echo from the second instance'], { metadata: { name: 'app', attempt: 1 }, logPath: 'app/1.log' });
  await eventually(async () => assert.equal((await corral('logs', id)).stdout, 'from the second instance\n'), { what: 'the second instance\'s line' });
  const prev = await corral('logs', '-p', id);
  assert.equal(prev.code, 0, prev.stderr);
  assert.equal(prev.stdout, 'from the first instance\n');
  const both = await corral('logs', '-p', '-f', id);
  assert.equal(both.code, 1);
  assert.match(both.stderr, /--previous and --follow together/);
});

test('logs -f: new lines as they come, every line once across a rotation (rename + ReopenContainerLog), and it ends when the container stops', async () => {
  const child = spawn(process.execPath, [mainJs, 'logs', '-f', '--tail', '1', 'ticker', ...ep], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const ticks = () => [...out.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
    await waitFor(() => ticks().length >= 5, { what: `followed lines (got ${JSON.stringify(out.slice(-200))})`, timeoutMs: 20_000 });

    const logPath = path.join(pod.logDirectory, 'ticker.log');
    await fs.rename(logPath, `${logPath}.1`);
    await d.rpc('ReopenContainerLog', { containerId: ids.ticker });
    const newFirst = await eventually(async () => {
      const m = /tick (\d+)/.exec(await fs.readFile(logPath, 'utf8'));
      assert.ok(m, 'a line in the new file');
      return Number(m[1]);
    }, { what: 'the first line in the new file' });
    await waitFor(() => ticks().some((n) => n >= newFirst + 5), { what: `lines of the new file followed (new file starts at tick ${newFirst}; got up to ${ticks().at(-1)})`, timeoutMs: 20_000 });

    await d.rpc('StopContainer', { containerId: ids.ticker, timeout: 0 });
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 15_000))]);
    assert.equal(code, 0, `logs -f ends by itself once the container stopped: ${err}`);
    const seen = ticks();
    const expected = Array.from({ length: seen.length }, (_, i) => seen[0]! + i);
    assert.deepEqual(seen, expected, 'every tick once, in order, across the rotation');
    assert.ok(seen.length >= 10);
  } finally {
    child.kill('SIGKILL');
  }
});

test('stats and statsp: a CPU-burning container and its pod show CPU that moves, memory, disk; the pod\'s network counters grow with traffic', async () => {
  const st = await corral('stats', '-s', '1');
  assert.equal(st.code, 0, st.stderr);
  const lines = st.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^CONTAINER\s+NAME\s+CPU %\s+MEM\s+DISK\s+INODES$/);
  const row = (text: string, name: string) => {
    const l = text.split('\n').find((x) => new RegExp(`^\\S+\\s+${name}\\s`).test(x));
    assert.ok(l, `a row for ${name} in:\n${text}`);
    return l!.trim().split(/\s+/);
  };
  const [, , cpu, mem, disk, inodes] = row(st.stdout, 'burner');
  assert.ok(Number(cpu) > 5, `burner's CPU % is ${cpu}`);
  assert.match(mem!, /^[\d.]+(B|kB|MB)$/);
  assert.notEqual(mem, '0B');
  assert.match(disk!, /^[\d.]+(B|kB|MB)$/);
  assert.match(inodes!, /^\d+$/);
  assert.ok(!lines.some((l) => /\slong\s/.test(l)), 'an exited container only with -a');
  assert.ok((await corral('stats', '-a')).stdout.split('\n').some((l) => /\slong\s/.test(l)));
  // Named on the command line (name, ID prefix); by pod.
  const named = await corral('stats', 'burner', ids.ticker!.slice(0, 9));
  assert.deepEqual(named.stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/\s+/)[1]).sort(), ['burner', 'ticker']);
  assert.equal((await corral('stats', '--pod', pod.name, '--label', 'role=burn')).stdout.trimEnd().split('\n').length, 2);

  // The cumulative CPU time moves between two calls.
  const cpuNs = async () => {
    const j = JSON.parse((await corral('stats', '-o', 'json', 'burner')).stdout);
    assert.equal(j.stats.length, 1);
    return BigInt(j.stats[0].cpu.usageCoreNanoSeconds.value);
  };
  const a = await cpuNs();
  await new Promise((r) => setTimeout(r, 500));
  assert.ok((await cpuNs()) > a, 'usage_core_nano_seconds grows');

  const sp = await corral('statsp', pod.name);
  assert.equal(sp.code, 0, sp.stderr);
  assert.match(sp.stdout.split('\n')[0]!, /^POD\s+POD ID\s+CPU %\s+MEM\s+NET RX\s+NET TX$/);
  const podRow = sp.stdout.split('\n').find((l) => l.startsWith(`${pod.name} `));
  assert.ok(podRow, sp.stdout);
  const [, id, podCpu, podMem, rx, tx] = podRow.trim().split(/\s+/);
  assert.equal(id, pod.podSandboxId.slice(0, 13));
  assert.ok(Number(podCpu) > 5, `the pod's CPU % is ${podCpu}`);
  assert.notEqual(podMem, '0B');
  assert.match(rx!, /^[\d.]+(B|kB|MB)$/);
  assert.match(tx!, /^[\d.]+(B|kB|MB)$/);

  const rxBytes = async () => {
    const j = JSON.parse((await corral('statsp', '-o', 'json', pod.podSandboxId.slice(0, 12))).stdout);
    return j.stats[0].linux.network.interfaces.reduce((s: number, i: any) => s + Number(i.rxBytes.value), 0);
  };
  const before = await rxBytes();
  const ip = (await d.rpc('PodSandboxStatus', { podSandboxId: pod.podSandboxId })).status.network.ip;
  const ping = await execFile('ping', ['-c', '5', '-i', '0.2', '-s', '1000', '-W', '2', ip]);
  assert.equal(ping.code, 0, ping.stdout + ping.stderr);
  assert.ok((await rxBytes()) >= before + 5000, 'five 1 KB pings reached the pod');
});
