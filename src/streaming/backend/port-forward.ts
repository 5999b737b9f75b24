/**
 * Port-forward: one corral-streamhelper per connection enters the pod's pinned network
 * namespace (setns in the helper, never in the daemon, whose libuv thread opens every
 * socket) and dials 127.0.0.1:port, then [::1]:port. Bytes go both ways through its stdio:
 * the client's end half-closes the pod socket, the pod's end ends the client's stream, and
 * the helper exits once both directions are done. A host-network pod dials from the host's
 * namespace the same way. Aborting kills the helper, which closes the connection.
 * A gVisor (runsc) pod's loopback lives in the sandbox's own network stack, not in the
 * pinned namespace: it is dialled from the host on the pod's IP instead (`address`).
 */
import { spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { nativeBinary } from '../../util/paths.js';
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

/** netnsPath null: the host's network namespace; address: dial it (from that namespace) instead of localhost. */
export async function forwardPort(podSandboxId: string, netnsPath: string | null, port: number, stream: Duplex, signal: AbortSignal, address?: string): Promise<void> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new PortForwardError(podSandboxId, port, 'the port must be 1-65535');
  const child = spawn(nativeBinary('corral-streamhelper'), ['portforward', netnsPath ?? '-', String(port), ...(address ? [address] : [])], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  const exit = exited(child);
  const stderr = readAll(child.stderr);
  const noop = () => {};
  child.stdin!.on('error', noop);
  stream.on('error', noop);
  // Backpressure both ways; each side's end is passed on (stream end → the pod socket's
  // SHUT_WR; the pod's EOF → the stream's end).
  stream.pipe(child.stdin!);
  child.stdout!.pipe(stream);
  // The server destroying the stream (client reset) ends the connection; a stream that
  // closes because both its sides are done leaves the helper to finish on its own.
  const onClose = () => {
    if (!(stream.readableEnded && stream.writableFinished)) killGroup(child);
  };
  stream.once('close', onClose);
  let grace: NodeJS.Timeout | undefined;
  child.stdout!.once('end', () => {
    grace = setTimeout(() => killGroup(child), POD_EOF_GRACE_MS);
  });
  const abort = whenAborted(signal);
  try {
    await Promise.race([exit, abort.promise]);
    if (signal.aborted) killGroup(child);
    const { code, spawnError } = await exit;
    if (spawnError) throw new PortForwardError(podSandboxId, port, `cannot run corral-streamhelper: ${spawnError.message}`);
    if (code === DIAL_FAILED) throw new PortForwardError(podSandboxId, port, (await stderr).trim() || 'dial failed');
    // Everything the pod sent is handed to the stream before this resolves.
    if (!child.stdout!.readableEnded && !child.stdout!.destroyed) await new Promise((r) => child.stdout!.once('close', r));
  } finally {
    clearTimeout(grace);
    abort.dispose();
    stream.off('close', onClose);
    stream.unpipe(child.stdin!);
    stream.off('error', noop);
    if (child.exitCode === null && child.signalCode === null) killGroup(child);
  }
}
