/**
 * What the streaming server needs from the runtime: the three operations behind the CRI
 * Exec, Attach and PortForward URLs (kubelet's streaming `Runtime` interface). The server
 * speaks the wire protocols (SPDY/3.1, WebSocket) and hands each session's streams here;
 * the runtime side runs commands, attaches to conmon and dials inside pod namespaces.
 */
import type { Duplex, Readable, Writable } from 'node:stream';

export interface TerminalSize {
  width: number;
  height: number;
}

/** One session's streams; absent ones are null, as the client asked. */
export interface StreamIO {
  stdin: Readable | null;
  stdout: Writable | null;
  /** Always null with a TTY (its output comes on stdout). */
  stderr: Writable | null;
  tty: boolean;
  /** Terminal size changes, in order; null when the client has no resize stream. */
  resize: AsyncIterable<TerminalSize> | null;
  /** Aborted when the client goes away: what the session started must stop. */
  signal: AbortSignal;
}

export interface StreamingRuntime {
  /**
   * Runs cmd in the running container and resolves with its exit code once it has exited
   * and its output is written. Rejects only when the command could not be run at all.
   */
  exec(containerId: string, cmd: string[], io: StreamIO): Promise<number>;
  /** Bridges the container's own stdio until its output ends or the client goes. */
  attach(containerId: string, io: StreamIO): Promise<void>;
  /**
   * One TCP connection to localhost:port inside the pod's network namespace (the host's
   * for a host-network pod): bytes both ways until either side ends it.
   */
  portForward(podSandboxId: string, port: number, stream: Duplex, signal: AbortSignal): Promise<void>;
}
