/** Which sysctls a pod may set (only namespaced ones, in a namespace it owns) and the ones it gets by default. */

/** Turns `net/ipv4/ip_forward` into `net.ipv4.ip_forward` (a name may use either separator). */
export function normalizeSysctlName(name: string): string {
  return name.includes('/') ? name.replace(/\//g, '.') : name;
}

export type SysctlNamespace = 'ipc' | 'net';

/** The namespace the kernel scopes a sysctl to, or null when it is node-wide. */
export function sysctlNamespace(name: string): SysctlNamespace | null {
  const n = normalizeSysctlName(name);
  if (/^kernel\.(shm|msg)[a-z_]*$/.test(n)) return 'ipc';
  if (n === 'kernel.sem' || n === 'kernel.sem_next_id') return 'ipc';
  if (n.startsWith('fs.mqueue.')) return 'ipc';
  if (n.startsWith('net.')) return 'net';
  return null;
}

/**
 * Accepts only sysctls the kernel scopes to a namespace the sandbox owns: IPC ones
 * (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) need a private IPC namespace,
 * net.* a private network namespace. Throws an Error naming the offending sysctl.
 */
export function validateSysctls(sysctls: Record<string, string>, opts: { hostNetwork: boolean; hostIpc: boolean }): void {
  for (const [name, value] of Object.entries(sysctls)) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.\/-]*$/.test(name) || name.includes('..')) {
      throw new Error(`sysctl "${name}": not a valid sysctl name`);
    }
    if (typeof value !== 'string' || /[\n\0]/.test(value)) {
      throw new Error(`sysctl "${name}": the value must be a single line of text`);
    }
    const ns = sysctlNamespace(name);
    if (ns === null) {
      throw new Error(`sysctl "${name}" is not namespaced: it would change the whole node, so a pod may not set it`);
    }
    if (ns === 'ipc' && opts.hostIpc) {
      throw new Error(`sysctl "${name}" belongs to the IPC namespace and the pod uses the host's IPC namespace`);
    }
    if (ns === 'net' && opts.hostNetwork) {
      throw new Error(`sysctl "${name}" belongs to the network namespace and the pod uses the host's network`);
    }
  }
}

/**
 * The sysctls a pod gets unless it asks otherwise: with its own network namespace,
 * unprivileged ports and ICMP echo sockets are open to all users. The CRI's values win.
 */
export function withDefaultSysctls(sysctls: Record<string, string>, opts: { hostNetwork: boolean }): Record<string, string> {
  if (opts.hostNetwork) return { ...sysctls };
  const given = new Set(Object.keys(sysctls).map(normalizeSysctlName));
  const out: Record<string, string> = {};
  if (!given.has('net.ipv4.ip_unprivileged_port_start')) out['net.ipv4.ip_unprivileged_port_start'] = '0';
  if (!given.has('net.ipv4.ping_group_range')) out['net.ipv4.ping_group_range'] = '0 2147483647';
  return { ...out, ...sysctls };
}
