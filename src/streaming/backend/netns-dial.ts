/**
 * A TCP connection to a port in a pod's network namespace, owned by the daemon itself:
 * native/netns-dial.c (a Node-API addon) enters the namespace on a thread of its own, dials
 * there and hands back the connected socket, which becomes a net.Socket here. Port-forward
 * bytes then go pod socket <-> daemon <-> client, as in containerd, with no helper process
 * per connection and no pipe hop. When the addon is not built (no Node headers at build
 * time), `netnsDialer()` is null and port-forward runs corral-streamhelper instead.
 */
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { nativeBinary } from '../../util/paths.js';

export const NETNS_DIAL_ADDON = 'corral-netns-dial.node';

interface NetnsDialAddon {
  dial(netnsPath: string, port: number, timeoutMs: number, done: (err: (Error & { code?: string }) | null, fd?: number) => void): void;
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
 * Dials 127.0.0.1:port, else [::1]:port, inside the network namespace pinned at netnsPath
 * (each try bounded by timeoutMs). The socket is half-open capable: the pod's EOF does not
 * end what the client still sends. An abort before the dial finishes closes what it made.
 */
export function dialInNetns(dialer: NetnsDialAddon, netnsPath: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    dialer.dial(netnsPath, port, timeoutMs, (err, fd) => {
      if (err || fd === undefined) return reject(err ?? new Error('the dial returned no socket'));
      if (signal?.aborted) {
        closeSync(fd);
        return reject(signal.reason ?? new Error('aborted'));
      }
      try {
        resolve(new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true }));
      } catch (e) {
        closeSync(fd);
        reject(e);
      }
    });
  });
}

/** Dials host:port from the daemon's own (the host's) namespace: a host-network pod, a gVisor pod's IP. */
export function dialFromHost(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`connect: ${host} port ${port}: timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}
