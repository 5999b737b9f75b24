/**
 * ExecSync is bounded in time and memory, with runc and with crun: at the deadline the
 * command and everything it started (setsid-ed descendants too) are gone before the call
 * answers, and the container keeps running; without a deadline a command that exits while
 * a descendant holds its pipes still answers; output is capped to its tail, and the daemon
 * does not buffer a flood.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { randomInt } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { EXEC_OUTPUT_CAP_BYTES } from '../../src/oci/runtime.js';
import { eventually } from '../helpers/wait.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox());
});

afterEach(async () => {
  for (const p of (await d.rpc('ListPodSandbox', {})).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

/** A pod of the handler with one running `sleep` container; returns the container ID. */
async function runningContainer(handler: string, pid: 'POD' | 'CONTAINER'): Promise<string> {
  const config = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid, ipc: 'POD' } } } });
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config, runtimeHandler: handler });
  return startContainer(d, { podSandboxId, sandboxConfig: config }, image, 'app', ['sleep', '100000']);
}

/** The host PIDs of live processes whose command line is exactly `argv` (zombies have none). */
async function processesRunning(argv: string[]): Promise<number[]> {
  const want = argv.join('\0') + '\0';
  const out: number[] = [];
  for (const p of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmdline = await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmdline === want) out.push(Number(p));
  }
  return out;
}

/** A `sleep` duration no other process on the machine uses: the test's marker. */
const marker = () => String(900_000 + randomInt(99_999));

/** The call must answer on its own well before this (the old code never did). */
const RPC_DEADLINE_MS = 30_000;
const execSync = (containerId: string, cmd: string[], timeout: number) => d.rpc('ExecSync', { containerId, cmd, timeout }, RPC_DEADLINE_MS);

async function timed<T>(p: Promise<T>): Promise<[T | undefined, unknown, number]> {
  const t0 = Date.now();
  try {
    return [await p, undefined, Date.now() - t0];
  } catch (e) {
    return [undefined, e, Date.now() - t0];
  }
}

async function daemonMemory(): Promise<{ rssKiB: number; hwmKiB: number }> {
  const text = await fs.readFile(`/proc/${d.pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s*(\\d+) kB`, 'm').exec(text)![1]);
  return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
}

for (const handler of ['runc', 'crun']) {
  for (const pid of ['POD', 'CONTAINER'] as const) {
    test(`${handler}, pid ${pid}: at the deadline the whole tree, setsid-ed descendants too, is gone before ExecSync answers; the container runs on`, async () => {
      const id = await runningContainer(handler, pid);
      const [detached, direct] = [marker(), marker()];
      const [, err, ms] = await timed(execSync(id, ['sh', '-c', `setsid sleep ${detached} & sleep ${direct}`], 2));
      // Checked at once, as critest's "execSync with timeout" does.
      const left = [...(await processesRunning(['sleep', detached])), ...(await processesRunning(['sleep', direct]))];
      assert.equal((err as any)?.code, status.DEADLINE_EXCEEDED, `DEADLINE_EXCEEDED, got ${(err as Error)?.message}`);
      assert.ok(ms >= 1900 && ms < 8000, `answered after ${ms} ms`);
      assert.deepEqual(left, [], 'no process of the timed-out exec is left');
      assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
      const again = await execSync(id, ['sh', '-c', 'echo still here'], 5);
      assert.deepEqual([again.exitCode, again.stdout.toString()], [0, 'still here\n']);
    });
  }

  test(`${handler}: a command that exits while a descendant holds its stdout answers in bounded time, with its own exit code, deadline or not`, async () => {
    const id = await runningContainer(handler, 'CONTAINER');
    const holder = marker();
    const [r, err, ms] = await timed(execSync(id, ['sh', '-c', `setsid sleep ${holder} & echo started; exit 4`], 0));
    assert.equal(err, undefined, `answered: ${(err as Error)?.message}`);
    assert.ok(ms < 6000, `answered after ${ms} ms`);
    assert.deepEqual([r.exitCode, r.stdout.toString()], [4, 'started\n'], 'the exit code and the output of the command');
    // Documented policy: only a deadline kills what a command leaves running (as cri-o).
    assert.equal((await processesRunning(['sleep', holder])).length, 1, 'the background descendant was not killed');

    // A descendant that does not hold the pipes does not delay the answer at all.
    const quiet = marker();
    const [q, qerr, qms] = await timed(execSync(id, ['sh', '-c', `setsid sleep ${quiet} >/dev/null 2>&1 </dev/null & echo ok`], 0));
    assert.equal(qerr, undefined);
    assert.equal(q.stdout.toString(), 'ok\n');
    assert.ok(qms < 1500, `answered after ${qms} ms`);

    // With a deadline shorter than the drain: the command finished in time, so it is its answer.
    const early = marker();
    const [e, eerr, ems] = await timed(execSync(id, ['sh', '-c', `setsid sleep ${early} & echo done; exit 2`], 1));
    assert.equal(eerr, undefined, `answered: ${(eerr as Error)?.message}`);
    assert.deepEqual([e.exitCode, e.stdout.toString()], [2, 'done\n']);
    assert.ok(ems < 3000, `answered after ${ems} ms`);
    assert.equal((await processesRunning(['sleep', early])).length, 1, 'what a command that finished in time left running is not killed');
  });
}

test('a bad command is INVALID_ARGUMENT; a command the runtime cannot start is an error, not an exit code', async () => {
  const id = await runningContainer('runc', 'CONTAINER');
  for (const cmd of [[], [''], ['echo', 'a\0b']]) {
    await assert.rejects(execSync(id, cmd, 5), (e: any) => e.code === status.INVALID_ARGUMENT, JSON.stringify(cmd));
  }
  await assert.rejects(execSync(id, ['/no/such/program'], 5), (e: any) => e.code === status.INTERNAL && /no\/such\/program/.test(e.details));
  assert.equal((await execSync(id, ['true'], 5)).exitCode, 0);
});

test('a client that goes away takes the command with it, even without a deadline of its own', async () => {
  const id = await runningContainer('crun', 'CONTAINER');
  const forever = marker();
  await assert.rejects(d.rpc('ExecSync', { containerId: id, cmd: ['sh', '-c', `sleep ${forever}`], timeout: 0 }, 2000), (e: any) => e.code === status.DEADLINE_EXCEEDED);
  await eventually(async () => assert.deepEqual(await processesRunning(['sleep', forever]), [], 'the abandoned command was killed'), { timeoutMs: 5000, intervalMs: 100, what: 'the abandoned command to be killed' });
  assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
});

test('output over the cap: the tail of each stream is kept, and the daemon does not buffer the flood', async (t) => {
  const id = await runningContainer('runc', 'CONTAINER');
  const cap = EXEC_OUTPUT_CAP_BYTES;
  // Once at the cap's size, so the measure below sees the flood, not the allocator warming up.
  const warm = await execSync(id, ['sh', '-c', `head -c ${cap} /dev/zero; head -c ${cap} /dev/zero >&2`], 60);
  assert.deepEqual([warm.stdout.length, warm.stderr.length], [cap, cap], 'output of exactly the cap is kept whole');

  const flood = 100 * 1024 * 1024;
  const before = await daemonMemory();
  await fs.writeFile(`/proc/${d.pid}/clear_refs`, '5'); // VmHWM := VmRSS, to see this call's peak
  const r = await execSync(id, ['sh', '-c', `head -c ${flood} /dev/zero; echo stdout-end; head -c ${flood} /dev/zero >&2; echo stderr-end >&2; exit 3`], 60);
  const after = await daemonMemory();
  assert.equal(r.exitCode, 3);
  for (const [name, buf] of [['stdout', r.stdout], ['stderr', r.stderr]] as const) {
    assert.equal(buf.length, cap, `${name} is capped at ${cap} bytes`);
    assert.equal(buf.subarray(-`${name}-end\n`.length).toString(), `${name}-end\n`, `${name} keeps its tail`);
    assert.equal(buf.subarray(0, 1024).every((b: number) => b === 0), true);
  }
  // The kept tails (2 × cap), their copies into the response, and slack for the heap's own
  // rhythm (measured: 1 to 14 MiB for any 2 MiB response); buffering the flood takes 200 MiB.
  const growth = (after.hwmKiB - before.rssKiB) * 1024;
  t.diagnostic(`daemon peak RSS growth: ${Math.round(growth / 1024)} KiB for ${(2 * cap) / 1024} KiB kept`);
  assert.ok(growth < 2 * 2 * cap + 20 * 1024 * 1024, `daemon peak RSS grew by ${Math.round(growth / 1024)} KiB during the call`);
  const logged = (await d.logLines()).filter((l) => l.msg === 'exec output over the cap: only its tail is kept' && l.id === id);
  assert.deepEqual(logged.map((l) => [l.stdoutDropped, l.stderrDropped]), [[flood + 11 - cap, flood + 11 - cap]], 'what was dropped is logged');
});
