/**
 * Pure validation of the CRI Exec, Attach and PortForward requests, as kubelet's streaming
 * library checks them (plus a non-empty command), into the requests the token cache keeps.
 * The state checks (container running, pod ready) are the handlers' part.
 */
import { invalidArgument } from '../errors.js';
import type { AttachRequest, ExecRequest, PortForwardRequest } from './token-cache.js';

/** Where the handlers hand validated requests: answers the one-time URL. */
export interface StreamingUrls {
  urlFor(request: ExecRequest | AttachRequest | PortForwardRequest): string;
}

function streamFlags(req: any, call: 'Exec' | 'Attach') {
  const tty = Boolean(req.tty);
  const stdin = Boolean(req.stdin);
  const stdout = Boolean(req.stdout);
  const stderr = Boolean(req.stderr);
  if (typeof req.containerId !== 'string' || req.containerId === '') throw invalidArgument(`${call}: missing required container_id`);
  if (tty && stderr) throw invalidArgument(`${call}: tty and stderr cannot both be true (a terminal has one output stream)`);
  if (!stdin && !stdout && !stderr) throw invalidArgument(`${call}: one of stdin, stdout, or stderr must be set`);
  return { tty, stdin, stdout, stderr };
}

export function execRequest(req: any): ExecRequest {
  const flags = streamFlags(req, 'Exec');
  const cmd: unknown = req.cmd;
  if (!Array.isArray(cmd) || cmd.length === 0) throw invalidArgument('Exec: cmd must not be empty');
  if (cmd.some((a) => typeof a !== 'string' || a.includes('\0')) || cmd[0] === '') throw invalidArgument('Exec: cmd must be strings without NUL bytes, the first one not empty');
  return { kind: 'exec', containerId: req.containerId, cmd: cmd as string[], ...flags };
}

export function attachRequest(req: any): AttachRequest {
  return { kind: 'attach', containerId: req.containerId, ...streamFlags(req, 'Attach') };
}

export function portForwardRequest(req: any): PortForwardRequest {
  if (typeof req.podSandboxId !== 'string' || req.podSandboxId === '') throw invalidArgument('PortForward: missing required pod_sandbox_id');
  const ports: unknown[] = Array.isArray(req.port) ? req.port : [];
  for (const p of ports) {
    if (!Number.isInteger(p) || (p as number) < 1 || (p as number) > 65535) throw invalidArgument(`PortForward: port ${String(p)} is not between 1 and 65535`);
  }
  return { kind: 'portforward', podSandboxId: req.podSandboxId, ports: ports as number[] };
}
