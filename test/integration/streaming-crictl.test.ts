/**
 * The streaming server against the real Go SPDY client: crictl v1.26.1 (client-go 0.26,
 * moby/spdystream) runs `exec` through Corral's Exec URL. Output, exit codes, stdin and
 * 10 MB of stdout must arrive intact; tokens are single-use and refused when reused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import { WebSocket } from 'ws';
import { eventually } from '../helpers/wait.js';
import path from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { execFile } from '../../src/util/exec.js';

const CRICTL_DIR = '/tmp/cri-tools-corral-test';
/** CI keeps shared/ beside the clone. */
const INSTALLER = path.join(packageRoot(), '..', 'shared', 'tools', 'cri-tools-v1.26.1', 'install.sh');

/** crictl from PATH, else installed from ../shared/tools; undefined when neither works. */
async function findCrictl(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(`${dir}/crictl`)) return `${dir}/crictl`;
  if (existsSync(`${CRICTL_DIR}/crictl`)) return `${CRICTL_DIR}/crictl`;
  if (!existsSync(INSTALLER)) return undefined;
  try {
    await execFile('bash', [INSTALLER, CRICTL_DIR]);
    return `${CRICTL_DIR}/crictl`;
  } catch {
    return undefined;
  }
}

const crictl = await findCrictl();
let reg: TestRegistry;
let d: TestDaemon;
let containerId: string;

before(async () => {
  reg = await startRegistry();
  await pushImage(reg, 'test/busybox', '1', await busyboxImage());
  const image = `${reg.host}/test/busybox:1`;
  d = new TestDaemon();
  await d.start();
  const images = createImageClient(d.socket);
  try {
    await call(images, 'PullImage', { image: { image } }, { deadlineMs: 60_000 });
  } finally {
    images.close();
  }
  const config = podConfig();
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config });
  ({ containerId } = await d.rpc('CreateContainer', {
    podSandboxId,
    config: { metadata: { name: 'app', attempt: 0 }, image: { image }, command: ['sleep', '100000'], logPath: 'app.log', linux: {} },
    sandboxConfig: config,
  }));
  await d.rpc('StartContainer', { containerId });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

const skip = () => (crictl ? false : 'crictl is not installed and ../shared/tools/cri-tools-v1.26.1/install.sh could not install it');

/** Runs crictl against the test daemon; stdin optional; resolves with everything it printed. */
function runCrictl(args: string[], stdin?: Buffer): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(crictl!, ['--runtime-endpoint', `unix://${d.socket}`, '--timeout', '30s', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    if (stdin) child.stdin.end(stdin);
    else child.stdin.end();
  });
}

test('crictl exec: stdout of the command, exit 0', { skip: skip() }, async () => {
  const r = await runCrictl(['exec', containerId, 'echo', 'hi']);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout.toString(), 'hi\n');
});

test('crictl exec: separate stderr, and a non-zero exit code reported as crictl prints it', { skip: skip() }, async () => {
  const r = await runCrictl(['exec', containerId, 'sh', '-c', 'echo out; echo err >&2; exit 3']);
  assert.equal(r.stdout.toString(), 'out\n');
  assert.match(r.stderr, /^err\n/);
  assert.match(r.stderr, /command terminated with exit code 3/);
  assert.equal(r.code, 1, 'crictl 1.26 exits 1 after printing the remote exit code');
});

test('crictl exec: 10 MB of stdout arrive intact (no 64 KiB SPDY window stall)', { skip: skip() }, async () => {
  const r = await runCrictl(['exec', containerId, 'sh', '-c', 'i=0; while [ $i -lt 10 ]; do head -c 1048576 /dev/zero | tr "\\0" "x"; i=$((i+1)); done']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 10 * 1024 * 1024);
  const want = createHash('sha256').update(Buffer.alloc(10 * 1024 * 1024, 'x')).digest('hex');
  assert.equal(createHash('sha256').update(r.stdout).digest('hex'), want);
});

test('crictl exec -i: stdin reaches the command, and its EOF ends it', { skip: skip() }, async () => {
  const data = Buffer.from(Array.from({ length: 20000 }, (_, i) => `line ${i}\n`).join(''));
  const r = await runCrictl(['exec', '-i', containerId, 'cat'], data);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(createHash('sha256').update(r.stdout).digest('hex'), createHash('sha256').update(data).digest('hex'));
});

test('crictl exec: a command that cannot be run is reported, not a success', { skip: skip() }, async () => {
  const r = await runCrictl(['exec', containerId, '/no/such/binary']);
  assert.notEqual(r.code, 0);
});

/** A raw HTTP request to a streaming URL; resolves with the status code. */
function rawRequest(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode!);
    });
    req.on('error', reject);
    req.end();
  });
}

test('Exec URL: single use, and a wrong kind or unknown token is a 404', async () => {
  const { url } = await d.rpc('Exec', { containerId, cmd: ['true'], stdout: true });
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]{8}$/);
  assert.equal(await rawRequest(url.replace('/exec/', '/attach/')), 404, 'an exec token on /attach/');
  // The wrong-kind attempt consumed it, as kubelet's cache does.
  assert.equal(await rawRequest(url), 404);
  const { url: url2 } = await d.rpc('Exec', { containerId, cmd: ['true'], stdout: true });
  const spdy = { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v4.channel.k8s.io' };
  assert.equal(await rawRequest(url2, spdy), 101);
  assert.equal(await rawRequest(url2, spdy), 404, 'a used token');
  assert.equal(await rawRequest(url2.replace(/[^/]+$/, 'AAAAAAAA'), spdy), 404);
});

test('Exec URL: no common protocol is a 403 naming the accepted ones', async () => {
  const { url } = await d.rpc('Exec', { containerId, cmd: ['true'], stdout: true });
  assert.equal(await rawRequest(url, { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'v9.channel.k8s.io' }), 403);
});

test('Exec, Attach, PortForward: bad requests are INVALID_ARGUMENT, missing objects NOT_FOUND', async () => {
  await assert.rejects(d.rpc('Exec', { containerId, cmd: [], stdout: true }), /INVALID_ARGUMENT|cmd must not be empty/);
  await assert.rejects(d.rpc('Exec', { containerId, cmd: ['true'] }), /one of stdin, stdout, or stderr/);
  await assert.rejects(d.rpc('Exec', { containerId, cmd: ['true'], tty: true, stdout: true, stderr: true }), /tty and stderr/);
  await assert.rejects(d.rpc('Exec', { containerId: 'nosuch', cmd: ['true'], stdout: true }), /NOT_FOUND|not found/);
  await assert.rejects(d.rpc('Attach', { containerId, stdout: false }), /one of stdin, stdout, or stderr/);
  await assert.rejects(d.rpc('PortForward', { podSandboxId: '' }), /missing required pod_sandbox_id/);
  await assert.rejects(d.rpc('PortForward', { podSandboxId: 'nosuch' }), /NOT_FOUND|not found/);
});

/** Host PIDs whose command line is exactly argv. */
async function pidsOf(argv: string[]): Promise<number[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const want = argv.join('\0') + '\0';
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const cmdline = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
    if (cmdline === want) out.push(Number(e));
  }
  return out;
}

test('a client killed mid-stream leaves no exec process behind', { skip: skip() }, async () => {
  const marker = ['sleep', String(4000 + Math.floor(Math.random() * 1000))];
  const child = spawn(crictl!, ['--runtime-endpoint', `unix://${d.socket}`, 'exec', containerId, ...marker], { stdio: 'ignore' });
  try {
    await eventually(async () => assert.equal((await pidsOf(marker)).length, 1), { timeoutMs: 15_000 });
  } finally {
    child.kill('SIGKILL');
  }
  await eventually(async () => assert.deepEqual(await pidsOf(marker), []), { timeoutMs: 15_000 });
});

test('WebSocket v5 against the daemon: exec output, stdin close and the exit code', async () => {
  const { url } = await d.rpc('Exec', { containerId, cmd: ['sh', '-c', 'cat; exit 5'], stdin: true, stdout: true, stderr: true });
  const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v5.channel.k8s.io']);
  const got: Buffer[] = [];
  ws.on('message', (m: Buffer) => got.push(m));
  await once(ws, 'open');
  ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('through stdin\n')]));
  ws.send(Buffer.from([0xff, 0]));
  await once(ws, 'close');
  const on = (ch: number) => Buffer.concat(got.filter((m) => m[0] === ch).map((m) => m.subarray(1))).toString();
  assert.equal(on(1), 'through stdin\n');
  assert.equal(JSON.parse(on(3)).details.causes[0].message, '5');
});

test('20 concurrent crictl execs each get their own output and exit code', { skip: skip() }, async () => {
  const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => runCrictl(['exec', containerId, 'sh', '-c', `echo run-${i}; exit ${i % 2 ? 4 : 0}`])));
  runs.forEach((r, i) => {
    assert.equal(r.stdout.toString(), `run-${i}\n`);
    if (i % 2) assert.match(r.stderr, /command terminated with exit code 4/);
    else assert.equal(r.code, 0, r.stderr);
  });
});

test('crictl exec -i: the session ends when the command exits, even with the client’s stdin still open', { skip: skip() }, async () => {
  const child = spawn(crictl!, ['--runtime-endpoint', `unix://${d.socket}`, 'exec', '-i', containerId, 'echo', 'done'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const [code] = await once(child, 'close');
  clearTimeout(timer);
  child.stdin.destroy();
  assert.equal(out, 'done\n');
  assert.equal(code, 0, 'crictl returned on its own, before our 15 s kill');
});
