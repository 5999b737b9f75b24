/**
 * `corral exec`, `corral attach` and `corral port-forward` as a user runs them: the built CLI
 * as a child process against a real daemon, a pod and busybox containers. Output, stdin,
 * exit codes, a terminal (under util-linux `script`), attach to a printing container, and a
 * port-forward moving data both ways through a server in the pod.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { waitFor } from '../helpers/wait.js';

const mainJs = path.join(packageRoot(), 'dist/src/cli/main.js');
let reg: TestRegistry;
let d: TestDaemon;
let image: string;
let podSandboxId: string;
let sandboxConfig: any;
let containerId: string;
const children = new Set<ChildProcess>();

/** A running container of busybox in the test's pod. */
function startAppContainer(name: string, command: string[], extra: Record<string, unknown> = {}): Promise<string> {
  return startContainer(d, { podSandboxId, sandboxConfig }, image, name, command, extra);
}

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox());
  sandboxConfig = podConfig();
  ({ podSandboxId } = await d.rpc('RunPodSandbox', { config: sandboxConfig }));
  containerId = await startAppContainer('app', ['sleep', '100000']);
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await d?.cleanup();
  await reg?.stop();
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Starts the CLI (or `file` with args) against the test daemon; `done` resolves with all it printed. */
function start(args: string[], opts: { stdin?: Buffer | 'keep open'; file?: string; timeoutMs?: number } = {}) {
  const child = opts.file
    ? spawn(opts.file, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(process.execPath, [mainJs, args[0]!, '-r', `unix://${d.socket}`, ...args.slice(1)], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (c: Buffer) => out.push(c));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
  });
  if (Buffer.isBuffer(opts.stdin)) child.stdin!.end(opts.stdin);
  else if (opts.stdin === undefined) child.stdin!.end();
  return { child, done, output: () => Buffer.concat(out).toString(), errors: () => err };
}

const corral = (args: string[], stdin?: Buffer) => start(args, { stdin }).done;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('corral --help lists exec, attach and port-forward; exec --help explains -i, -t, --timeout', async () => {
  const r = await start([mainJs, '--help'], { file: process.execPath }).done;
  assert.equal(r.code, 0);
  assert.match(r.stdout.toString(), /^  exec +run a command in a running container/m);
  assert.match(r.stdout.toString(), /^  attach +attach to a running container/m);
  assert.match(r.stdout.toString(), /^  port-forward +forward 127\.0\.0\.1:LOCAL/m);
  const exec = await corral(['exec', '--help']);
  assert.equal(exec.code, 0);
  assert.match(exec.stdout.toString(), /usage: corral exec \[flags\] CONTAINER CMD \[ARG\.\.\.\]/);
  assert.match(exec.stdout.toString(), /-i, --interactive/);
  assert.match(exec.stdout.toString(), /-t, --tty/);
  assert.match(exec.stdout.toString(), /--timeout DURATION/);
});

test('corral exec: the command\'s stdout, exit 0, nothing else printed', async () => {
  const r = await corral(['exec', containerId, 'echo', 'hello', 'world']);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout.toString(), 'hello world\n');
  const byPrefix = await corral(['exec', containerId.slice(0, 12), 'echo', 'prefix']);
  assert.equal(byPrefix.stdout.toString(), 'prefix\n', byPrefix.stderr);
});

test('corral exec: flags after the command are the command\'s (exec ID ls -l)', async () => {
  const r = await corral(['exec', containerId, 'sh', '-c', 'echo "$0 $1"', '-x', '--timeout']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), '-x --timeout\n');
});

test('corral exec: the command\'s exit code is the CLI\'s, stderr stays apart, nothing extra printed', async () => {
  const r = await corral(['exec', containerId, 'sh', '-c', 'echo out; echo err >&2; exit 3']);
  assert.equal(r.code, 3);
  assert.equal(r.stdout.toString(), 'out\n');
  assert.equal(r.stderr, 'err\n');
  assert.equal((await corral(['exec', containerId, 'false'])).code, 1);
});

test('corral exec -i: piped stdin reaches the command and its EOF ends it', async () => {
  const data = Buffer.from(Array.from({ length: 20000 }, (_, i) => `line ${i}\n`).join(''));
  const r = await corral(['exec', '-i', containerId, 'cat'], data);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(r.stdout), sha(data));
  // Without -i the command's stdin is closed, even when the CLI has some.
  const noStdin = await corral(['exec', containerId, 'cat'], Buffer.from('not for cat\n'));
  assert.equal(noStdin.code, 0, noStdin.stderr);
  assert.equal(noStdin.stdout.toString(), '');
});

test('corral exec: 1 MB of stdout arrives intact', async () => {
  const r = await corral(['exec', containerId, 'sh', '-c', 'head -c 1048576 /dev/zero | tr "\\0" "y"']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 1024 * 1024);
  assert.equal(sha(r.stdout), sha(Buffer.alloc(1024 * 1024, 'y')));
});

test('corral exec: errors are exit 1 with a message: no such container, no command, a timeout', async () => {
  const missing = await corral(['exec', 'f'.repeat(64), 'true']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^corral: .*not found/i);
  const noCmd = await corral(['exec', containerId]);
  assert.equal(noCmd.code, 1);
  assert.match(noCmd.stderr, /needs a command/);
  const t0 = Date.now();
  const slow = await corral(['exec', '--timeout', '1s', containerId, 'sleep', '30']);
  assert.equal(slow.code, 1);
  assert.match(slow.stderr, /corral exec: timed out after 1s/);
  assert.ok(Date.now() - t0 < 15_000);
});

/** Runs a shell script under `script` (util-linux), so the CLI has a terminal. */
function underTerminal(shellScript: string) {
  return start(['-qec', shellScript, '/dev/null'], { file: 'script', stdin: 'keep open', timeoutMs: 60_000 });
}

test('corral exec -it under a terminal: the command has a TTY of the terminal\'s size, and sees it resized (SIGWINCH)', async () => {
  const cli = `${process.execPath} ${mainJs}`;
  const endpoint = `-r unix://${d.socket}`;
  const marker = `/tmp/resize-${randomInt(1e9)}`;
  // In the container: wait for 30x100, say so, then wait for 40x120 (each bounded).
  const inner = `i=0; until [ "$(stty size)" = "30 100" ] || [ $i -gt 200 ]; do sleep 0.05; i=$((i+1)); done; stty size; touch ${marker}; ` +
    `i=0; until [ "$(stty size)" = "40 120" ] || [ $i -gt 400 ]; do sleep 0.05; i=$((i+1)); done; stty size; [ -t 0 ] && echo stdin-is-a-tty`;
  // A background job's stdin is /dev/null unless given: the terminal, so raw mode is exercised too.
  const outer = `stty cols 100 rows 30; modes=$(stty -g); ${cli} exec ${endpoint} -it ${containerId} sh -c '${inner}' < /dev/tty & ` +
    `until ${cli} exec ${endpoint} ${containerId} test -e ${marker}; do sleep 0.2; done; stty cols 120 rows 40; wait $!; echo "cli-exit=$?"; [ "$(stty -g)" = "$modes" ] && echo terminal-restored`;
  const r = await underTerminal(outer).done;
  const text = r.stdout.toString();
  assert.equal(r.code, 0, text + r.stderr);
  assert.match(text, /^30 100\r?$/m, text);
  assert.match(text, /^40 120\r?$/m, 'the resize reached the command');
  assert.match(text, /stdin-is-a-tty/);
  assert.match(text, /cli-exit=0/);
  assert.match(text, /terminal-restored/, 'raw mode was undone');
});

test('corral exec -t: lines reach the terminal as the remote terminal wrote them (\\r\\n, not \\r\\r\\n)', async () => {
  const r = await underTerminal(`${process.execPath} ${mainJs} exec -r unix://${d.socket} -it ${containerId} sh -c 'echo first; echo second'; echo "cli-exit=$?"`).done;
  const text = r.stdout.toString();
  assert.match(text, /first\r\nsecond\r\n/, JSON.stringify(text));
  assert.doesNotMatch(text, /\r\r\n/, JSON.stringify(text));
  assert.match(text, /cli-exit=0/);
});

test('corral exec -t: the exit code passes through a terminal session too', async () => {
  const r = await underTerminal(`${process.execPath} ${mainJs} exec -r unix://${d.socket} -it ${containerId} sh -c 'exit 7'; echo "cli-exit=$?"`).done;
  assert.match(r.stdout.toString(), /cli-exit=7/);
});

test('corral attach: the output of a running container; Ctrl-C detaches and it runs on', async () => {
  const id = await startAppContainer('printer', ['sh', '-c', 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done']);
  const a = start(['attach', id]);
  await waitFor(() => (a.output().match(/^tick \d+$/gm) ?? []).length >= 3, { what: 'three lines through attach', timeoutMs: 20_000 });
  a.child.kill('SIGINT');
  const r = await a.done;
  assert.equal(r.stderr, '');
  assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
  const again = await corral(['attach', 'f'.repeat(64)]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /not found/i);
});

test('corral attach -i: stdin reaches a container that reads it', async () => {
  const id = await startAppContainer('reader', ['sh', '-c', 'while read line; do echo "got $line"; done'], { stdin: true });
  const a = start(['attach', '-i', id], { stdin: 'keep open' });
  a.child.stdin!.write('one\n');
  await waitFor(() => a.output().includes('got one\n'), { what: 'the echo through attach -i', timeoutMs: 20_000 });
  a.child.kill('SIGINT');
  await a.done;
});

const connectTo = (port: number) =>
  new Promise<void>((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => (sock.destroy(), resolve()));
    sock.on('error', reject);
  });

test('corral attach -t to a TTY container: the terminal\'s size reaches it; SIGTERM ends the CLI and leaves the terminal as it was', async () => {
  const id = await startAppContainer('tty-printer', ['sh', '-c', 'while true; do stty size; sleep 0.2; done'], { tty: true });
  const cli = `${process.execPath} ${mainJs} attach -r unix://${d.socket} -t ${id}`;
  const r = await underTerminal(`stty cols 90 rows 20; modes=$(stty -g); ${cli} < /dev/tty & pid=$!; sleep 5; kill -TERM $pid; wait $pid; ` +
    `echo "cli-exit=$?"; [ "$(stty -g)" = "$modes" ] && echo terminal-restored`).done;
  const text = r.stdout.toString();
  assert.match(text, /^20 90\r*$/m, text);
  assert.match(text, /cli-exit=143/);
  assert.match(text, /terminal-restored/);
  assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
});

/** Sends `data` through a connection to 127.0.0.1:port; resolves with what came back once the other end closed. */
function exchange(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    sock.on('data', (c) => got.push(c));
    sock.on('error', () => undefined); // a refused forward is a closed connection: nothing came back
    sock.on('close', () => resolve(Buffer.concat(got)));
    sock.write(data);
  });
}

test('corral port-forward: data both ways through a server in the pod, many connections, until Ctrl-C', async () => {
  const port = 7000 + randomInt(1000);
  // Reads 256 KiB, answers their md5sum, then 256 KiB of its own.
  await startAppContainer('server', ['sh', '-c', `exec nc -ll -p ${port} -e sh -c 'head -c 262144 | md5sum; head -c 262144 /dev/zero | tr "\\0" "z"'`]);
  const pf = start(['port-forward', podSandboxId.slice(0, 12), `0:${port}`], { stdin: 'keep open' }); // an ID prefix, as everywhere
  await waitFor(() => /Forwarding from 127\.0\.0\.1:\d+ -> \d+/.test(pf.output()), { what: 'the listener', timeoutMs: 20_000 });
  const local = Number(/Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)/.exec(pf.output())![1]);
  assert.match(pf.output(), new RegExp(`-> ${port}\\n`));
  for (let i = 0; i < 3; i++) {
    const sent = randomBytes(262144);
    let got: Buffer = Buffer.alloc(0);
    await waitFor(async () => (got = await exchange(local, sent)).length > 0, { what: `the server in the pod to answer (port-forward said: ${pf.errors()})`, timeoutMs: 20_000 });
    const md5 = createHash('md5').update(sent).digest('hex');
    assert.equal(got.subarray(0, 32).toString(), md5, `connection ${i}: what the pod received`);
    assert.equal(got.length, 32 + '  -\n'.length + 262144, `connection ${i}: what came back`);
    assert.ok(got.subarray(got.length - 262144).every((b) => b === 0x7a));
  }
  // Concurrent connections, each over its own stream.
  const many = await Promise.all(Array.from({ length: 4 }, () => randomBytes(262144)).map(async (sent) => ({ sent, got: await exchange(local, sent) })));
  for (const { sent, got } of many) assert.equal(got.subarray(0, 32).toString(), createHash('md5').update(sent).digest('hex'));
  pf.child.kill('SIGINT');
  const r = await pf.done;
  assert.equal(r.code, 0, r.stderr);
  await assert.rejects(connectTo(local), /ECONNREFUSED/);
});

test('corral port-forward: a port nothing listens on is reported, and the forwarder keeps running', async () => {
  const pf = start(['port-forward', podSandboxId, '0:1'], { stdin: 'keep open' });
  await waitFor(() => /Forwarding from/.test(pf.output()), { what: 'the listener', timeoutMs: 20_000 });
  const local = Number(/127\.0\.0\.1:(\d+)/.exec(pf.output())![1]);
  assert.equal((await exchange(local, Buffer.from('x'))).length, 0);
  await waitFor(() => /corral port-forward: connection to port 1: .*refused/i.test(pf.errors()), { what: 'the error', timeoutMs: 10_000 });
  assert.equal(pf.child.exitCode, null, 'still running');
  pf.child.kill('SIGTERM');
  assert.equal((await pf.done).code, 0);
  const bad = await corral(['port-forward', podSandboxId, 'x:80']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /bad port mapping "x:80"/);
  const noPod = await corral(['port-forward', 'f'.repeat(64), '80']);
  assert.equal(noPod.code, 1);
  assert.match(noPod.stderr, /not found/i);
});
