/**
 * The runtime side of streaming (src/streaming/backend), against real runc/crun, conmon and
 * a TestDaemon's pods: built from the same lookups the daemon makes (the container's
 * runtime, init PID and conmon paths; the pod's pinned netns), here read from the CRI's
 * verbose status. Exec exit codes, large output and input through the pipes, a TTY and its
 * resizes, concurrency, a client leaving mid-stream, attach, and port-forward in pod and
 * host network.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Duplex, PassThrough, Readable, Writable } from 'node:stream';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { conmonStreamPaths, createStreamingRuntime, PortForwardError, type StreamingBackendDeps } from '../../src/streaming/backend/index.js';
import { DIAL_TIMEOUT_MS, forwardPort, POD_EOF_GRACE_MS } from '../../src/streaming/backend/port-forward.js';
import { NETNS_DIAL_ADDON, netnsDialer } from '../../src/streaming/backend/netns-dial.js';
import type { StreamingRuntime, StreamIO, TerminalSize } from '../../src/streaming/runtime.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { execFile } from '../../src/util/exec.js';
import { containerCgroupDirs, parseCgroupMounts, parseProcCgroup } from '../../src/oci/exec-cgroup.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;
let rt: StreamingRuntime;
const pods: string[] = [];

/** The backend's lookups, from what the CRI reports (the daemon derives the same). */
function testDeps(): StreamingBackendDeps {
  return {
    async container(id) {
      const r = await d.rpc('ContainerStatus', { containerId: id, verbose: true });
      const info = JSON.parse(r.info.info);
      const handler = info.runtimeHandler as string;
      return {
        id: r.status.id,
        pid: info.pid,
        runtime: { name: handler, binary: handler, root: path.join(d.stateDir, handler) },
        tty: Boolean(info.config?.tty),
        ...conmonStreamPaths(d.stateDir, r.status.id),
      };
    },
    async podNetns(podSandboxId) {
      const r = await d.rpc('PodSandboxStatus', { podSandboxId, verbose: true });
      const info = JSON.parse(r.info.info);
      return info.hostNetwork ? null : info.netnsPath;
    },
  };
}

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox({ tag: 'all', busybox: { allApplets: true } }));
  rt = createStreamingRuntime(testDeps());
});

after(async () => {
  for (const p of pods) await d?.rpc('RemovePodSandbox', { podSandboxId: p }).catch(() => {});
  await d?.cleanup();
  await reg?.stop();
});

async function pod(handler: string, network: 'POD' | 'NODE' = 'POD'): Promise<{ podSandboxId: string; config: any }> {
  const config = podConfig({ linux: { securityContext: { namespaceOptions: { network, pid: 'CONTAINER', ipc: 'POD' } } } });
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config, runtimeHandler: handler });
  pods.push(podSandboxId);
  return { podSandboxId, config };
}

async function container(handler: string, command: string[] = ['sleep', '100000'], inPod?: { podSandboxId: string; config: any }, extra: Record<string, unknown> = {}): Promise<string> {
  const p = inPod ?? (await pod(handler));
  const { containerId } = await d.rpc('CreateContainer', {
    podSandboxId: p.podSandboxId,
    config: { metadata: { name: `app-${randomBytes(3).toString('hex')}`, attempt: 0 }, image: { image }, command, logPath: 'app.log', linux: {}, ...extra },
    sandboxConfig: p.config,
  });
  await d.rpc('StartContainer', { containerId });
  return containerId;
}

/** A Writable that keeps what it gets; `slowMs` makes it a slow client (backpressure). */
class Collector extends Writable {
  chunks: Buffer[] = [];
  bytes = 0;
  constructor(private readonly slowMs = 0) {
    super({ highWaterMark: 16 * 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.slowMs && this.chunks.length % 64 === 0) setTimeout(cb, this.slowMs);
    else cb();
  }
  get buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
  get text(): string {
    return this.buffer.toString('utf8');
  }
}

/** An async iterable fed by push(), like the server's resize stream. */
class Queue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | null = null;
  private ended = false;
  push(v: T): void {
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w({ value: v, done: false });
    } else this.items.push(v);
  }
  end(): void {
    this.ended = true;
    this.waiting?.({ value: undefined as never, done: true });
  }
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length) return Promise.resolve({ value: this.items.shift()!, done: false });
        if (this.ended) return Promise.resolve({ value: undefined as never, done: true });
        return new Promise((r) => (this.waiting = r));
      },
    };
  }
}

function session(o: { stdin?: Readable | Buffer | null; tty?: boolean; resize?: AsyncIterable<TerminalSize> | null; stderr?: boolean; slowMs?: number } = {}) {
  const stdout = new Collector(o.slowMs);
  const stderr = new Collector();
  const ac = new AbortController();
  const stdin: Readable | null = Buffer.isBuffer(o.stdin) ? Readable.from([o.stdin]) : ((o.stdin as Readable | null | undefined) ?? null);
  const io: StreamIO = { stdin, stdout, stderr: o.tty || o.stderr === false ? null : stderr, tty: Boolean(o.tty), resize: o.resize ?? null, signal: ac.signal };
  return { io, stdout, stderr, abort: () => ac.abort() };
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const marker = () => String(900_000 + randomInt(99_999));

async function processesRunning(argv: string[]): Promise<number[]> {
  const want = argv.join('\0') + '\0';
  const out: number[] = [];
  for (const p of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    if ((await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')) === want) out.push(Number(p));
  }
  return out;
}

async function run(id: string, cmd: string[], o: Parameters<typeof session>[0] = {}): Promise<{ code: number; out: string; err: string }> {
  const s = session(o);
  const code = await rt.exec(id, cmd, s.io);
  return { code, out: s.stdout.text, err: s.stderr.text };
}

for (const handler of ['runc', 'crun']) {
  test(`${handler}: exec exit codes 0, 1 and 137 (SIGKILL), stdout and stderr apart`, async () => {
    const id = await container(handler);
    assert.deepEqual(await run(id, ['sh', '-c', 'echo -n hello; echo -n oops >&2']), { code: 0, out: 'hello', err: 'oops' });
    assert.equal((await run(id, ['sh', '-c', 'exit 1'])).code, 1);
    assert.equal((await run(id, ['sh', '-c', 'kill -9 $$'])).code, 137);
    await assert.rejects(rt.exec(id, ['/no/such/command'], session().io), /no\/such\/command|not found|No such file/i);
  });

  test(`${handler}: 10 MB of stdout to a slow client arrive intact; 1 MB of stdin reaches the command, and its end is the command's EOF`, async () => {
    const id = await container(handler);
    const made = await run(id, ['sh', '-c', 'head -c 10485760 /dev/urandom > /tmp/big && md5sum /tmp/big']);
    assert.equal(made.code, 0, made.err);
    const s = session({ slowMs: 1 });
    assert.equal(await rt.exec(id, ['cat', '/tmp/big'], s.io), 0);
    assert.equal(s.stdout.bytes, 10 * 1024 * 1024);
    assert.equal(md5(s.stdout.buffer), made.out.split(' ')[0]);

    const input = randomBytes(1024 * 1024);
    const r = await run(id, ['md5sum'], { stdin: input });
    assert.deepEqual([r.code, r.out.split(' ')[0]], [0, md5(input)]);
  });

  test(`${handler}: a TTY exec sees the sizes the client sends (stty size), before and during the session`, async () => {
    const id = await container(handler);
    const resize = new Queue<TerminalSize>();
    resize.push({ width: 123, height: 45 });
    const stdin = new PassThrough();
    const s = session({ tty: true, stdin, resize });
    const done = rt.exec(id, ['sh'], s.io);
    stdin.write('stty size\n');
    await waitFor(() => s.stdout.text.includes('45 123'), { what: 'the first size', timeoutMs: 10_000 });
    resize.push({ width: 80, height: 24 });
    await waitFor(async () => {
      stdin.write('stty size\n');
      await new Promise((r) => setTimeout(r, 100));
      return s.stdout.text.includes('24 80');
    }, { what: 'the new size', timeoutMs: 10_000 });
    stdin.write('exit 3\n');
    assert.equal(await done, 3);
    resize.end();
    // tty output carries \r\n: it really went through a terminal.
    assert.match(s.stdout.text, /45 123\r\n/);
  });

  test(`${handler}: 20 concurrent execs each get their own output and exit code, and leave no fd behind`, async () => {
    const id = await container(handler);
    await run(id, ['true']);
    const fdsBefore = (await fs.readdir('/proc/self/fd')).length;
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => run(id, ['sh', '-c', `echo out-${i}; exit ${i}`])));
    assert.deepEqual(rs.map((r) => [r.code, r.out]), Array.from({ length: 20 }, (_, i) => [i, `out-${i}\n`]));
    await waitFor(async () => (await fs.readdir('/proc/self/fd')).length <= fdsBefore, { what: 'the sessions\' pipes to be closed', timeoutMs: 5000 });
  });

  test(`${handler}: a command that exits while a descendant holds its stdout ends the session after a bounded drain`, async () => {
    const id = await container(handler);
    const holder = marker();
    const t0 = Date.now();
    const r = await run(id, ['sh', '-c', `setsid sleep ${holder} & echo hi; exit 5`]);
    assert.deepEqual([r.code, r.out], [5, 'hi\n']);
    assert.ok(Date.now() - t0 < 6000, `ended after ${Date.now() - t0} ms`);
  });

  test(`${handler}: a TTY session whose client leaves takes its whole tree with it`, async () => {
    const id = await container(handler);
    const m = marker();
    const s = session({ tty: true, stdin: new PassThrough() });
    const done = rt.exec(id, ['sh', '-c', `setsid sleep ${m} & echo started; sleep ${m}`], s.io);
    await waitFor(() => s.stdout.text.includes('started'), { what: 'the session to start' });
    s.abort();
    assert.equal(await done, 137);
    assert.deepEqual(await processesRunning(['sleep', m]), []);
  });

  test(`${handler}: a client leaving mid-stream leaves no process of its exec (setsid-ed ones too); the container runs on`, async () => {
    const id = await container(handler);
    const [m1, m2] = [marker(), marker()];
    const s = session();
    const t0 = Date.now();
    const done = rt.exec(id, ['sh', '-c', `setsid sleep ${m1} & sleep ${m2} & yes`], s.io);
    await waitFor(() => s.stdout.bytes > 64 * 1024, { what: 'output to flow' });
    assert.equal((await processesRunning(['sleep', m1])).length, 1, 'the marker runs while the session does');
    s.abort();
    assert.equal(await done, 137);
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual([...(await processesRunning(['sleep', m1])), ...(await processesRunning(['sleep', m2])), ...(await processesRunning(['yes']))].length, 0);
    assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
    assert.equal((await run(id, ['true'])).code, 0);
  });
}

test('an exec whose temp dir cannot be made fails and leaves no exec cgroup behind', async () => {
  const id = await container('runc');
  const { pid } = JSON.parse((await d.rpc('ContainerStatus', { containerId: id, verbose: true })).info.info) as { pid: number };
  const dirs = containerCgroupDirs(
    parseProcCgroup(await fs.readFile(`/proc/${pid}/cgroup`, 'utf8')),
    parseCgroupMounts(await fs.readFile('/proc/self/mountinfo', 'utf8')),
    id,
  );
  assert.ok(dirs.length > 0, 'the container has cgroups');
  const execCgroups = async () => (await Promise.all(dirs.map(async (c) => (await fs.readdir(c.dir)).filter((n) => n.startsWith('corral-exec-'))))).flat();
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = `/nonexistent-${randomBytes(4).toString('hex')}`; // os.tmpdir() reads it on each call
  try {
    await assert.rejects(rt.exec(id, ['true'], session().io), /ENOENT/);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
  assert.deepEqual(await execCgroups(), []);
  assert.equal((await run(id, ['true'])).code, 0);
});

test('attach receives what a running container prints; detaching leaves it running, and another attach sees more', async () => {
  const id = await container('runc', ['sh', '-c', 'i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done']);
  for (let round = 0; round < 2; round++) {
    const s = session();
    const done = rt.attach(id, s.io);
    await waitFor(() => (s.stdout.text.match(/line\d+\n/g) ?? []).length >= 5, { what: 'lines through the attach socket' });
    s.abort();
    await done;
    const nums = (s.stdout.text.match(/line(\d+)\n/g) ?? []).map((l) => Number(l.slice(4)));
    assert.ok(nums.every((n, i) => i === 0 || n === nums[i - 1]! + 1), 'lines in order, none lost');
    assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
  }
  await assert.rejects(rt.attach('0'.repeat(64), session().io), /not found/i);
});

test('attach to a stdin_once container (critest): its stdin reaches the container, the client\'s stdin end closes it, and the attach ends with the container', async () => {
  const id = await container('runc', ['/bin/sh'], undefined, { stdin: true, stdinOnce: true });
  const stdin = new PassThrough();
  const s = session({ stdin });
  const done = rt.attach(id, s.io);
  stdin.write('echo -n hello\n');
  await waitFor(() => s.stdout.text === 'hello', { what: 'the echo through attach' });
  stdin.end();
  await done;
  assert.equal(s.stdout.text, 'hello');
  assert.equal(s.stderr.text, '');
  await waitFor(async () => (await d.rpc('ContainerStatus', { containerId: id })).status.state === 'CONTAINER_EXITED', { what: 'sh to exit at its stdin EOF' });
});

test('an attach without stdin does not read as a stdin EOF to a stdin_once container while it is attached', async () => {
  const id = await container('runc', ['/bin/sh'], undefined, { stdin: true, stdinOnce: true });
  const watcher = session({ stdin: null });
  const watching = rt.attach(id, watcher.io);
  await sleep(500); // long enough for sh to see an EOF and exit, were there one
  assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING', 'stdin is still open');
  // conmon (as with cri-o) closes a stdin_once container's stdin when any attach session ends.
  watcher.abort();
  await watching;
});

test('attach to a TTY container: output on stdout, resizes through conmon\'s ctl FIFO seen by the process', async () => {
  const id = await container('runc', ['sh', '-c', 'while true; do stty size; sleep 0.1; done'], undefined, { tty: true });
  const resize = new Queue<TerminalSize>();
  resize.push({ width: 100, height: 30 });
  const s = session({ tty: true, resize });
  const done = rt.attach(id, s.io);
  await waitFor(() => s.stdout.text.includes('30 100\r\n'), { what: 'the first size' });
  resize.push({ width: 90, height: 20 });
  await waitFor(() => s.stdout.text.includes('20 90\r\n'), { what: 'the second size' });
  s.abort();
  await done;
  resize.end();
  assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
});

/** Forwards one connection: sends `send`, resolves with what came back once the pod ended it. */
async function forward(podSandboxId: string, port: number, send: Buffer): Promise<Buffer> {
  const received = new Collector();
  const stream = Duplex.from({ readable: Readable.from([send]), writable: received });
  await rt.portForward(podSandboxId, port, stream, new AbortController().signal);
  return received.buffer;
}

test('port-forward moves 1 MB each way to a server inside the pod, which the host cannot reach', async () => {
  const p = await pod('runc');
  const port = 7000 + randomInt(1000);
  const id = await container('runc', ['sh', '-c', `head -c 1048576 /dev/urandom > /tmp/out; exec nc -ll -p ${port} -e sh -c 'head -c 1048576 > /tmp/in; cat /tmp/out'`], p);
  await assert.rejects(forward(p.podSandboxId, 1, Buffer.from('x')), (e: Error) => e instanceof PortForwardError && /refused/i.test(e.message));
  const sent = randomBytes(1024 * 1024);
  let got: Buffer | undefined;
  await waitFor(async () => {
    try {
      got = await forward(p.podSandboxId, port, sent);
      return true;
    } catch (e) {
      if (e instanceof PortForwardError) return false; // not listening yet
      throw e;
    }
  }, { what: 'the server in the pod', timeoutMs: 15_000 });
  const outSum = (await run(id, ['md5sum', '/tmp/out'])).out.split(' ')[0];
  const inSum = (await run(id, ['md5sum', '/tmp/in'])).out.split(' ')[0];
  assert.equal(got!.length, 1024 * 1024);
  assert.equal(md5(got!), outSum, 'the pod → client direction');
  assert.equal(inSum, md5(sent), 'the client → pod direction');
  // The daemon's (host) namespace has nothing on that port.
  await assert.rejects(new Promise((res, rej) => net.connect(port, '127.0.0.1').on('connect', res).on('error', rej)));
});

test('port-forward: the daemon dials the pod itself (netns-dial addon, no helper process); without the addon corral-streamhelper does it', async (t) => {
  if (!netnsDialer()) {
    // The build skips the addon only when Node.js's headers are missing (scripts/build-native.sh).
    const headers = path.join(path.dirname(path.dirname(await fs.realpath(process.execPath))), 'include', 'node', 'node_api.h');
    assert.equal(await fs.stat(headers).then(() => true, () => false), false, `${NETNS_DIAL_ADDON} is missing although ${headers} exists: npm run build`);
    t.skip(`${NETNS_DIAL_ADDON} not built (no ${headers}); port-forward goes through corral-streamhelper, which the tests above used`);
    return;
  }
  const p = await pod('runc');
  const port = 7000 + randomInt(1000);
  await container('runc', ['sh', '-c', `exec nc -ll -p ${port} -e cat`], p);
  const netns = (await testDeps().podNetns(p.podSandboxId))!;
  await waitFor(async () => {
    try {
      return (await forward(p.podSandboxId, port, Buffer.from('ping'))).toString() === 'ping';
    } catch (e) {
      if (e instanceof PortForwardError) return false; // not listening yet
      throw e;
    }
  }, { what: 'the server in the pod', timeoutMs: 15_000 });
  const helpers = async () => (await execFile('pgrep', ['-f', 'corral-streamhelper portforward'])).stdout.trim();
  // A connection held open: echoed bytes arrive while no helper process exists.
  const clientSide = new PassThrough();
  const received = new Collector();
  const open = rt.portForward(p.podSandboxId, port, Duplex.from({ readable: clientSide, writable: received }), AbortSignal.timeout(20_000));
  const sent = randomBytes(256 * 1024);
  clientSide.write(sent);
  await waitFor(() => received.buffer.length === sent.length, { what: 'the echo' });
  assert.equal(await helpers(), '', 'no corral-streamhelper while the addon-dialled connection is open');
  clientSide.end();
  await open;
  assert.ok(received.buffer.equals(sent), 'echoed intact through the daemon\'s own socket');
  // Every dialled socket is closed with its connection (the runtime runs in this process).
  const fds = async () => (await fs.readdir('/proc/self/fd')).length;
  const fdsBefore = await fds();
  for (let i = 0; i < 20; i++) assert.equal((await forward(p.podSandboxId, port, Buffer.from(`n${i}`))).toString(), `n${i}`);
  await assert.rejects(forward(p.podSandboxId, 1, Buffer.from('x')), (e: Error) => e instanceof PortForwardError && /refused/i.test(e.message));
  assert.equal(await fds(), fdsBefore, 'no fd left behind by 20 connections and a refused dial');
  // The fallback: the same through corral-streamhelper (dialer null).
  const viaHelper = async (port_: number, send: Buffer) => {
    const got = new Collector();
    await forwardPort(p.podSandboxId, netns, port_, Duplex.from({ readable: Readable.from([send]), writable: got }), new AbortController().signal, undefined, null);
    return got.buffer;
  };
  const again = randomBytes(256 * 1024);
  assert.ok((await viaHelper(port, again)).equals(again), 'echoed intact through corral-streamhelper');
  await assert.rejects(viaHelper(1, Buffer.from('x')), (e: Error) => e instanceof PortForwardError && /refused/i.test(e.message));
});

test('port-forward: an abort while the pod does not answer the dial (SYNs dropped) ends it at once and leaves no socket', async (t) => {
  if (!netnsDialer()) return t.skip(`${NETNS_DIAL_ADDON} not built`);
  const p = await pod('runc');
  const netns = (await testDeps().podNetns(p.podSandboxId))!;
  const port = 7000 + randomInt(1000);
  const drop = await execFile('nsenter', [`--net=${netns}`, 'iptables', '-w', '-A', 'INPUT', '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
  assert.equal(drop.code, 0, drop.stderr);
  const fds = async () => (await fs.readdir('/proc/self/fd')).length;
  const before = await fds();
  const ac = new AbortController();
  const stream = Duplex.from({ readable: new PassThrough(), writable: new Collector() });
  const t0 = Date.now();
  const done = rt.portForward(p.podSandboxId, port, stream, ac.signal);
  await sleep(300);
  assert.ok((await fds()) > before, 'the dial is under way (its socket open)');
  ac.abort();
  await done;
  assert.ok(Date.now() - t0 < 3000, `ended ${Date.now() - t0} ms after it began; the dial would wait ${DIAL_TIMEOUT_MS} ms`);
  assert.equal(await fds(), before, 'the dialling socket is closed');
});

test('netns-dial: a missing pin, or a file that is no network namespace, is an error named by its errno; bad arguments a TypeError', async (t) => {
  // (That the socket it makes is the pod's: the port-forward tests above reach servers only the pod's namespace has.)
  const dialer = netnsDialer();
  if (!dialer) return t.skip(`${NETNS_DIAL_ADDON} not built`);
  const fds = async () => (await fs.readdir('/proc/self/fd')).length;
  const before = await fds();
  assert.throws(() => dialer.socketIn('/run/corral-no-such-pin', 4), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.errno === 2);
  assert.throws(() => dialer.socketIn('/etc/hostname', 6), (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && /network namespace \/etc\/hostname/.test(e.message));
  assert.throws(() => dialer.socketIn('relative/path', 4), TypeError);
  assert.throws(() => dialer.socketIn('/proc/self/ns/net', 5 as 4), TypeError);
  assert.equal(await fds(), before, 'a failed call leaves no fd open');
});

test('port-forward of a host-network pod dials the host; many connections at once', async () => {
  const p = await pod('runc', 'NODE');
  const server = net.createServer((c) => c.pipe(c)); // echo
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as net.AddressInfo).port;
    const payloads = Array.from({ length: 10 }, () => randomBytes(64 * 1024));
    const got = await Promise.all(payloads.map((b) => forward(p.podSandboxId, port, b)));
    got.forEach((g, i) => assert.ok(g.equals(payloads[i]!), `connection ${i} echoed intact`));
  } finally {
    server.close();
  }
  // A server only on ::1 is reached through the IPv6 fallback.
  const v6 = net.createServer((c) => c.pipe(c));
  await new Promise<void>((r) => v6.listen(0, '::1', r));
  try {
    const b = randomBytes(1000);
    assert.ok((await forward(p.podSandboxId, (v6.address() as net.AddressInfo).port, b)).equals(b));
  } finally {
    v6.close();
  }
});

test('port-forward: once the pod closes its side, the connection ends within the grace period even if the client never does', async () => {
  const p = await pod('runc', 'NODE');
  const server = net.createServer((c) => c.end('bye\n')); // answers and closes, as an HTTP/1.0 server does
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const received = new Collector();
    const clientSide = new PassThrough(); // the client never ends its side
    const stream = Duplex.from({ readable: clientSide, writable: received });
    const t0 = Date.now();
    await rt.portForward(p.podSandboxId, (server.address() as net.AddressInfo).port, stream, AbortSignal.timeout(20_000));
    const took = Date.now() - t0;
    assert.equal(received.buffer.toString(), 'bye\n');
    assert.ok(took < POD_EOF_GRACE_MS + 3000, `the connection stayed open ${took} ms after the pod closed it`);
  } finally {
    server.close();
  }
});

for (const how of ['abort', 'stream destroyed (client reset)'] as const) {
  test(`port-forward: ${how} ends the connection`, async () => {
    const p = await pod('runc', 'NODE');
    let serverSide: net.Socket | undefined;
    const server = net.createServer((c) => (serverSide = c));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const ac = new AbortController();
      const stream = Duplex.from({ readable: new PassThrough(), writable: new Collector() });
      const done = rt.portForward(p.podSandboxId, (server.address() as net.AddressInfo).port, stream, ac.signal);
      await waitFor(() => serverSide !== undefined, { what: 'the connection' });
      const closed = new Promise((r) => serverSide!.on('close', r));
      serverSide!.resume();
      if (how === 'abort') ac.abort();
      else stream.destroy();
      await done;
      await closed;
    } finally {
      server.close();
    }
  });
}
