/**
 * The exit status a remote-command session reports on its error stream: a metav1.Status
 * as JSON (v4+), or only its message on failure (v1–v3). Key order and omitted fields as
 * kubelet writes them; the exit code cause sits under "reason" (StatusCause.Type's tag),
 * and client-go parses its message as an unsigned 8-bit number.
 */
import type { Logger } from '../util/log.js';
import type { StreamingRuntime, StreamIO } from './runtime.js';
import type { AttachRequest, ExecRequest } from './token-cache.js';

export type SessionOutcome =
  | { kind: 'exited'; exitCode: number }
  | { kind: 'failed'; message: string; prefix: string };

/** Runs an exec or attach session on the runtime (either transport); a failure becomes the outcome, never a throw. */
export async function runSession(runtime: StreamingRuntime, req: ExecRequest | AttachRequest, io: StreamIO, logger: Logger): Promise<SessionOutcome> {
  try {
    if (req.kind === 'exec') return { kind: 'exited', exitCode: await runtime.exec(req.containerId, req.cmd, io) };
    await runtime.attach(req.containerId, io);
    return { kind: 'exited', exitCode: 0 };
  } catch (e) {
    logger.info({ containerId: req.containerId, kind: req.kind, err: (e as Error).message }, 'streaming session failed');
    return { kind: 'failed', message: (e as Error).message, prefix: req.kind === 'exec' ? 'error executing command in container' : 'error attaching to container' };
  }
}

export function statusObject(o: SessionOutcome): object {
  if (o.kind === 'exited' && o.exitCode === 0) return { metadata: {}, status: 'Success' };
  if (o.kind === 'exited') {
    const code = Math.max(0, Math.min(255, Math.trunc(o.exitCode)));
    return {
      metadata: {},
      status: 'Failure',
      message: `command terminated with non-zero exit code: exit status ${code}`,
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
    };
  }
  const inner = `${o.prefix}: ${o.message}`;
  return {
    metadata: {},
    status: 'Failure',
    message: `Internal error occurred: ${inner}`,
    reason: 'InternalError',
    details: { causes: [{ message: inner }] },
    code: 500,
  };
}

/** What goes on the error stream for a protocol version; empty = nothing (success before v4). */
export function errorStreamPayload(o: SessionOutcome, protocol: string): Buffer {
  if (protocol === 'v4.channel.k8s.io' || protocol === 'v5.channel.k8s.io') return Buffer.from(JSON.stringify(statusObject(o)));
  if (o.kind === 'exited' && o.exitCode === 0) return Buffer.alloc(0);
  return Buffer.from((statusObject(o) as { message: string }).message);
}
