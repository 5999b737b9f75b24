/**
 * The exit status a remote-command session reports on its error stream: a metav1.Status
 * as JSON (v4+), or only its message on failure (v1–v3). Key order and omitted fields as
 * kubelet writes them; the exit code cause sits under "reason" (StatusCause.Type's tag),
 * and client-go parses its message as an unsigned 8-bit number.
 */

export type SessionOutcome =
  | { kind: 'exited'; exitCode: number }
  | { kind: 'failed'; message: string; prefix: string };

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
