/**
 * TCP connections to a port in a pod's network namespace, owned by the daemon itself:
 * native/netns-dial.c (a Node-API addon) makes the socket inside the namespace on a thread of
 * its own, and Node connects it here like any other (a socket stays in the namespace it was
 * made in). Port-forward bytes then go pod socket <-> daemon <-> client, as in containerd,
 * with no helper process per connection and no pipe hop. When the addon is not built (no
 * Node headers at build time), `netnsDialer()` is null and port-forward runs
 * corral-streamhelper instead.
 */
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { nativeBinary } from '../../util/paths.js';

export const NETNS_DIAL_ADDON = 'corral-netns-dial.node';

export interface NetnsDialAddon {
  /** A new unconnected, non-blocking TCP socket of that family in the namespace pinned at netnsPath; throws with `code`. */
  socketIn(netnsPath: string, family: 4 | 6): number;
}

let addon: NetnsDialAddon | null | undefined;

/** The addon, loaded once; null when it is missing or cannot be loaded. */
export function netnsDialer(): NetnsDialAddon | null {
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url)(nativeBinary(NETNS_DIAL_ADDON)) as NetnsDialAddon;
    } catch {
      addon = null;
    }
  }
  return addon;
}

/**
 * Connects `socket` (a fresh net.Socket) to host:port within timeoutMs; an abort destroys it
 * at once (nothing of a dial outlives the session that asked for it). The socket is half-open
 * capable: the pod's EOF does not end what the client still sends.
 */
function connect(socket: net.Socket, host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const fail = (e: Error) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(e);
    };
    const onAbort = () => fail(Object.assign(new Error(`connect ${host} port ${port}: aborted`), { code: 'ABORT_ERR' }));
    const timer = setTimeout(() => fail(Object.assign(new Error(`connect ${host} port ${port}: no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', fail);
    socket.connect({ host, port });
  });
}

/** Dials host:port (127.0.0.1 or ::1) from inside the network namespace pinned at netnsPath. */
export function dialInNetns(dialer: NetnsDialAddon, netnsPath: string, host: '127.0.0.1' | '::1', port: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  const fd = dialer.socketIn(netnsPath, host === '::1' ? 6 : 4);
  let socket: net.Socket;
  try {
    // manualStart: no read before it is connected (reading starts once it is).
    socket = new net.Socket({ fd, allowHalfOpen: true, manualStart: true } as net.SocketConstructorOpts);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return connect(socket, host, port, timeoutMs, signal);
}

/** Dials host:port from the daemon's own (the host's) namespace: a host-network pod, a gVisor pod's IP. */
export function dialFromHost(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return connect(new net.Socket({ allowHalfOpen: true }), host, port, timeoutMs, signal);
}
