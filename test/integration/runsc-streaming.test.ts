/**
 * Streaming (exec, exec with a TTY, attach, port-forward) into gVisor (runsc) pods with the
 * real crictl v1.26.1: exec runs through the handler's wrapper with runsc's flags and the
 * container's user; a client killed mid-exec leaves no process inside the sandbox (checked
 * with `runsc ps`); port-forward reaches a server in the sandbox's own network stack.
 * Skipped, saying why, when runsc or crictl is missing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { podConfig } from '../helpers/daemon.js';
import { startDaemonWithBusybox, startContainer, type BusyboxDaemon } from '../helpers/busybox-daemon.js';
import { execFile } from '../../src/util/exec.js';
import { findExecutable } from '../../src/util/paths.js';
import { runscProcessesOf } from '../../src/oci/runsc.js';
import { parseRunscPs } from '../../src/streaming/backend/runsc-exec.js';
import { waitFor } from '../helpers/wait.js';

const runsc = await findExecutable('runsc');
const crictl = (await findExecutable('crictl')) ?? (existsSync('/tmp/cri-tools-corral-test/crictl') ? '/tmp/cri-tools-corral-test/crictl' : undefined);
const skip = !runsc ? 'runsc is not installed (apt-get install runsc; scripts/install-deps.sh does it)' : !crictl ? 'crictl is not installed (see streaming-crictl.test.ts)' : false;

let env: BusyboxDaemon | undefined;
const d = () => env!.d;
const root = () => path.join(d().stateDir, 'runsc');
let pod: { podSandboxId: string; sandboxConfig: any };
let web: string;
const children: ChildProcess[] = [];

before(async () => {
  if (skip) return;
  env = await startDaemonWithBusybox({
    tag: 'runscstream',
    daemon: { extraToml: ['[runtimes.runc]', 'path = "runc"', '[runtimes.runsc]', 'path = "runsc"', 'type = "vm"'].join('\n') },
  });
  const config = podConfig();
  const { podSandboxId } = await d().rpc('RunPodSandbox', { config, runtimeHandler: 'runsc' }, 120_000);
  pod = { podSandboxId, sandboxConfig: config };
  // A server listening on the sandbox's loopback and pod IP; the container runs as uid 1000.
  web = await startContainer(d(), pod, env.image, 'web', ['sh', '-c', 'echo hello-from-gvisor > /tmp/index.html && exec httpd -f -p 8080 -h /tmp'], {
    envs: [{ key: 'GREETING', value: Buffer.from('from-spec') }],
    linux: { securityContext: { runAsUser: { value: 1000 } } },
  });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (!env) return;
  try {
    const { items } = await d().rpc('ListPodSandbox', {});
    for (const i of items) {
      await d().rpc('StopPodSandbox', { podSandboxId: i.id }).catch(() => {});
      await d().rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
    }
    // What a failed test left of runsc: TestDaemon.cleanup kills every runsc process under the daemon's roots.
  } finally {
    await env.d.cleanup();
    await env.reg.stop();
  }
});

/** crictl against the test daemon; resolves with what it printed. */
function runCrictl(args: string[], stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(crictl!, ['--runtime-endpoint', `unix://${d().socket}`, '--timeout', '30s', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: out, stderr: err });
    });
    child.stdin.end(stdin ?? '');
  });
}

/** A long-running crictl (attach, port-forward, an exec to kill), with its output so far. */
function startCrictl(args: string[]) {
  const child = spawn(crictl!, ['--runtime-endpoint', `unix://${d().socket}`, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  return { child, output: () => out };
}

/** The commands running in a container, as gVisor's `runsc ps` lists them (names only). */
async function sandboxCommands(id: string): Promise<string[]> {
  const r = await execFile('runsc', ['--root', root(), 'ps', id]);
  assert.equal(r.code, 0, r.stderr);
  const procs = parseRunscPs(r.stdout);
  assert.ok(procs, `runsc ps printed no process table: ${r.stdout}`);
  return procs.map((p) => p.cmd);
}

test('runsc crictl exec: runs inside gVisor as the container\'s user with its env; stdout, stderr, exit code', { skip, timeout: 120_000 }, async () => {
  const r = await runCrictl(['exec', web, 'sh', '-c', 'echo uid=$(id -u) greeting=$GREETING; dmesg | head -1; echo err >&2; exit 3']);
  assert.match(r.stdout, /^uid=1000 greeting=from-spec\n/, r.stdout + r.stderr);
  assert.match(r.stdout, /gVisor/i, 'the command ran inside the sandbox');
  assert.match(r.stderr, /^err\n/);
  assert.match(r.stderr, /command terminated with exit code 3/);
});

test('runsc crictl exec -i: stdin reaches the command and its EOF ends it', { skip, timeout: 120_000 }, async () => {
  const data = Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join('');
  const r = await runCrictl(['exec', '-i', web, 'cat'], data);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, data);
});

test('runsc crictl exec -it (under script): the command has a terminal of the client\'s size and TERM, the exit code passes through', { skip, timeout: 120_000 }, async () => {
  // The terminal's size (set here) reaches the command's pty: the helper resizes the pty master runsc handed over.
  const cmd = `stty cols 100 rows 30; ${crictl} --runtime-endpoint unix://${d().socket} exec -it ${web} sh -c 'echo term=$TERM uid=$(id -u); [ -t 0 ] && echo stdin-is-a-tty; [ -t 1 ] && echo stdout-is-a-tty; echo size=$(stty size); exit 5'; echo "crictl-exit=$?"`;
  const r = await execFile('script', ['-qec', cmd, '/dev/null'], { timeoutMs: 60_000 });
  assert.match(r.stdout, /term=xterm uid=1000/, r.stdout + r.stderr);
  assert.match(r.stdout, /stdin-is-a-tty/);
  assert.match(r.stdout, /stdout-is-a-tty/);
  assert.match(r.stdout, /size=30 100/);
  assert.match(r.stdout, /crictl-exit=1/, 'crictl 1.26 exits 1 after a non-zero remote exit code');
  assert.match(r.stdout, /exit code 5/);
});

test('runsc crictl exec: the client killed mid-exec leaves no process of it inside the sandbox, nor on the host', { skip, timeout: 120_000 }, async () => {
  // Three processes: a background child, a setsid-ed one (its own session) and the foreground one.
  const ex = startCrictl(['exec', web, 'sh', '-c', 'sleep 1001 & setsid sleep 1002 & sleep 1003']);
  // runsc ps shows the command's name only: the container runs no sleep of its own.
  const sleeps = async () => (await sandboxCommands(web)).filter((c) => c === 'sleep').length;
  assert.equal(await sleeps(), 0);
  await waitFor(async () => {
    const seen = await sandboxCommands(web);
    if (seen.filter((c) => c === 'sleep').length === 3) return true;
    throw new Error(`crictl said: ${ex.output()}; runsc ps: ${seen.join(' ')}`);
  }, { timeoutMs: 30_000, what: "the exec's three sleeps in runsc ps" });
  const hostBefore = (await runscProcessesOf(root(), web)).length;
  ex.child.kill('SIGKILL');
  await waitFor(async () => (await sleeps()) === 0, { timeoutMs: 30_000, what: 'no sleep of the exec left inside the sandbox' });
  // The container itself runs on, and the exec's runsc waiter on the host is gone.
  assert.match((await sandboxCommands(web)).join(' '), /httpd/);
  await waitFor(async () => (await runscProcessesOf(root(), web)).length < hostBefore, { timeoutMs: 15_000, what: 'the exec\'s runsc process on the host to end' });
  assert.equal((await d().rpc('ContainerStatus', { containerId: web })).status.state, 'CONTAINER_RUNNING');
});

test('runsc crictl attach: the output of a running container, and stdin to one that reads it', { skip, timeout: 120_000 }, async () => {
  const ticker = await startContainer(d(), pod, env!.image, 'ticker', ['sh', '-c', 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done']);
  const a = startCrictl(['attach', ticker]);
  await waitFor(() => {
    if ((a.output().match(/^tick \d+$/gm) ?? []).length < 3) throw new Error(`got: ${a.output()}`);
    return true;
  }, { timeoutMs: 30_000, what: 'three ticks through attach' });
  a.child.kill('SIGKILL');

  const reader = await startContainer(d(), pod, env!.image, 'reader', ['sh', '-c', 'while read l; do echo got $l; done'], { stdin: true });
  const b = startCrictl(['attach', '-i', reader]);
  b.child.stdin!.write('one\n');
  await waitFor(() => {
    if (!b.output().includes('got one')) throw new Error(`got: ${b.output()}`);
    return true;
  }, { timeoutMs: 30_000, what: 'the echo through attach -i' });
  b.child.kill('SIGKILL');
});

test('runsc crictl attach -it to a TTY container (under script): its terminal output, and input echoed back', { skip, timeout: 120_000 }, async () => {
  const id = await startContainer(d(), pod, env!.image, 'ttyshell', ['sh', '-c', 'while read l; do echo "got $l, tty $([ -t 0 ] && echo yes)"; done'], { tty: true, stdin: true });
  // crictl attach -it needs a terminal: under script, whose stdin feeds the terminal crictl reads.
  const child = spawn('script', ['-qec', `${crictl} --runtime-endpoint unix://${d().socket} attach -it ${id}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  try {
    // Typed until the attach is up (a line typed before it is lost, as on a real terminal).
    await waitFor(() => {
      child.stdin!.write('hello\r');
      if (!/got hello, tty yes/.test(out)) throw new Error(`got: ${JSON.stringify(out)}`);
      return true;
    }, { timeoutMs: 30_000, intervalMs: 500, what: 'the echo through attach -it' });
  } finally {
    process.kill(-child.pid!, 'SIGKILL');
  }
});

test('runsc crictl port-forward: a server in the sandbox\'s own network stack answers through it', { skip, timeout: 120_000 }, async () => {
  const pf = startCrictl(['port-forward', pod.podSandboxId, ':8080']);
  let local = 0;
  await waitFor(() => {
    const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(pf.output());
    if (!m) throw new Error(`crictl said: ${pf.output()}`);
    local = Number(m[1]);
    return true;
  }, { timeoutMs: 30_000, what: 'crictl port-forward to listen' });
  for (let i = 0; i < 3; i++) {
    const r = await execFile('wget', ['-q', '-T', '10', '-O', '-', `http://127.0.0.1:${local}/index.html`], { timeoutMs: 20_000 });
    assert.equal(r.stdout, 'hello-from-gvisor\n', `connection ${i}: ${r.stderr} (port-forward said: ${pf.output()})`);
  }
  pf.child.kill('SIGKILL');
});
