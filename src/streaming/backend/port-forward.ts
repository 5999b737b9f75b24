/**
 * Port-forward: one connection to the pod's 127.0.0.1:port (else [::1]:port), bridged to the
 * session's data stream with backpressure both ways: the client's end half-closes the pod
 * socket, the pod's end ends the client's stream (and after a grace period the connection),
 * aborting or the client's reset closes it.
 *
 * Where the connection comes from: the daemon dials it itself. The netns-dial addon makes the
 * socket inside the pod's pinned network namespace (on a short-lived thread of its own; see
 * netns-dial.ts) and the daemon connects it, so bytes go pod socket <-> daemon <-> client. A host-network pod is dialled from the daemon's
 * own (the host's) namespace, and a gVisor (runsc) pod on its IP from there too, since its
 * loopback lives in the sandbox's own network stack, not in the pinned namespace. Without
 * the addon, one corral-streamhelper per connection enters the namespace (setns in the
 * helper, never in the daemon, whose libuv threads open every socket), dials and copies
 * through its stdio.
 */
import { spawn } from 'node:child_process';
import type net from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import { nativeBinary } from '../../util/paths.js';
import { dialFromHost, dialInNetns, netnsDialer } from './netns-dial.js';
import { exited, killGroup, readAll, whenAborted } from './pipes.js';

export class PortForwardError extends Error {
  constructor(podSandboxId: string, port: number, detail: string) {
    super(`forwarding port ${port} of pod ${podSandboxId}: ${detail}`);
    this.name = 'PortForwardError';
  }
}

/** The helper's exit status when it could not enter the namespace or dial. */
const DIAL_FAILED = 2;

/**
 * Once the pod has ended its side, how long the client's side may still send before the
 * connection is closed. client-go closes a forwarded local connection only when the runtime
 * ends the pair, so without this a local client that waits for the close (HTTP/1.0, nc)
 * would hang; containerd waits one second too.
 */
export const POD_EOF_GRACE_MS = 1000;

/** How long one dial (127.0.0.1, then ::1) may wait for the pod to answer (a SYN dropped by the pod's firewall). */
export const DIAL_TIMEOUT_MS = 20_000;

/**
 * netnsPath null: the host's network namespace; address: dial it (from the host's namespace)
 * instead of localhost. dialer: the netns-dial addon (null: the helper; for tests).
 */
export async function forwardPort(podSandboxId: string, netnsPath: string | null, port: number, stream: Duplex, signal: AbortSignal, address?: string, dialer = netnsDialer()): Promise<void> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new PortForwardError(podSandboxId, port, 'the port must be 1-65535');
  if (netnsPath !== null && !address && !dialer) return forwardThroughHelper(podSandboxId, netnsPath, port, stream, signal);
  let socket: net.Socket;
  try {
    if (address) socket = await dialFromHost(address, port, DIAL_TIMEOUT_MS, signal);
    else if (netnsPath === null) socket = await dialLocalhost((host) => dialFromHost(host, port, DIAL_TIMEOUT_MS, signal), signal);
    else socket = await dialLocalhost((host) => dialInNetns(dialer!, netnsPath, host, port, DIAL_TIMEOUT_MS, signal), signal);
  } catch (e) {
    if (signal.aborted) return;
    throw new PortForwardError(podSandboxId, port, `dialing ${address ?? 'localhost'} in the pod: ${(e as Error).message}`);
  }
  // A connection that fails midway simply ends (bridge ignores its errors), as TCP does.
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await bridge(stream, socket, socket, () => socket.destroy(), closed, signal);
}

/** The pod's localhost, as containerd dials it: 127.0.0.1, else ::1. */
async function dialLocalhost(dial: (host: '127.0.0.1' | '::1') => Promise<net.Socket>, signal: AbortSignal): Promise<net.Socket> {
  try {
    return await dial('127.0.0.1');
  } catch (e4) {
    if (signal.aborted) throw e4;
    try {
      return await dial('::1');
    } catch (e6) {
      throw new Error(`127.0.0.1: ${(e4 as Error).message}; [::1]: ${(e6 as Error).message}`);
    }
  }
}

/**
 * Bridges the client's stream and the pod's side (`podOut`: what the pod sends, `podIn`: what
 * it receives) with backpressure both ways: the client's end is passed on (the pod socket's
 * SHUT_WR), the pod's end ends the stream and, POD_EOF_GRACE_MS later, the connection (`kill`);
 * the client's reset or an abort kills it at once. Resolves when `finished` does (the pod side
 * closed, everything it sent handed to the stream). Never rejects.
 */
async function bridge(stream: Duplex, podOut: Readable, podIn: Writable, kill: () => void, finished: Promise<unknown>, signal: AbortSignal): Promise<void> {
  const noop = () => {};
  podIn.on('error', noop);
  stream.on('error', noop);
  stream.pipe(podIn);
  podOut.pipe(stream);
  // A stream that closes because both its sides are done leaves the pod side to finish on its own.
  const onStreamClose = () => {
    if (!(stream.readableEnded && stream.writableFinished)) kill();
  };
  stream.once('close', onStreamClose);
  let grace: NodeJS.Timeout | undefined;
  podOut.once('end', () => {
    grace = setTimeout(kill, POD_EOF_GRACE_MS);
  });
  const abort = whenAborted(signal);
  try {
    await Promise.race([finished, abort.promise]);
    if (signal.aborted) kill();
    await finished;
  } finally {
    clearTimeout(grace);
    abort.dispose();
    stream.off('close', onStreamClose);
    stream.unpipe(podIn);
    podOut.unpipe(stream);
    stream.off('error', noop);
  }
}

/** The fallback without the addon: corral-streamhelper enters the namespace, dials and copies through its stdio. */
async function forwardThroughHelper(podSandboxId: string, netnsPath: string, port: number, stream: Duplex, signal: AbortSignal): Promise<void> {
  const child = spawn(nativeBinary('corral-streamhelper'), ['portforward', netnsPath, String(port)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  const exit = exited(child);
  const stderr = readAll(child.stderr);
  const stdoutClosed = new Promise<void>((resolve) => child.stdout!.once('close', () => resolve()));
  // Finished once it exited and everything it wrote reached the stream (a spawn failure has no output).
  const finished = exit.then((r) => (r.spawnError ? r : stdoutClosed.then(() => r)));
  try {
    await bridge(stream, child.stdout!, child.stdin!, () => killGroup(child), finished, signal);
    const { code, spawnError } = await exit;
    if (spawnError) throw new PortForwardError(podSandboxId, port, `cannot run corral-streamhelper: ${spawnError.message}`);
    if (code === DIAL_FAILED) throw new PortForwardError(podSandboxId, port, (await stderr).trim() || 'dial failed');
  } finally {
    if (child.exitCode === null && child.signalCode === null) killGroup(child);
  }
}
