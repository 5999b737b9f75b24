/**
 * The tables of `corral stats` and `corral statsp`, as crictl computes them: CPU % from two
 * samples of the cumulative CPU time (usage_core_nano_seconds over the samples' timestamps),
 * memory as the working set (what kubelet evicts on), sizes in crictl's units. Pure.
 */
import { decimalSize } from './format.js';

const num = (v: { value?: string | number } | null | undefined): number => (v?.value === undefined ? 0 : Number(v.value));
const ts = (v: string | number | undefined): number => (v === undefined ? 0 : Number(v));

/**
 * CPU % between two samples of a cgroup (100 = one core busy); "-" without an earlier
 * sample; the daemon's own rate (usage_nano_cores) when the counter did not move in time.
 */
export function cpuPercent(prev: any, cur: any): string {
  if (!cur) return '-';
  const now = num(cur.usageCoreNanoSeconds);
  if (now === 0) return '0.00';
  if (!prev) return '-';
  const dt = ts(cur.timestamp) - ts(prev.timestamp);
  if (dt <= 0) return cur.usageNanoCores ? (num(cur.usageNanoCores) / 1e7).toFixed(2) : '-';
  return (Math.max(0, now - num(prev.usageCoreNanoSeconds)) / dt * 100).toFixed(2);
}

const byId = (a: any, b: any) => (a.attributes.id < b.attributes.id ? -1 : a.attributes.id > b.attributes.id ? 1 : 0);

/**
 * Rows of `corral stats`: CONTAINER, NAME, CPU %, MEM, DISK, INODES, sorted by ID. Like
 * crictl, containers with no CPU and no memory figure (not running) are left out unless
 * `all`, and so are containers absent from the first sample.
 */
export function containerStatsRows(first: any[], second: any[], all: boolean): string[][] {
  const before = new Map(first.map((s) => [s.attributes.id, s]));
  const rows: string[][] = [];
  for (const s of [...second].sort(byId)) {
    const prev = before.get(s.attributes.id);
    if (!prev) continue;
    const cpu = num(s.cpu?.usageCoreNanoSeconds);
    const mem = num(s.memory?.workingSetBytes);
    if (!all && cpu === 0 && mem === 0) continue;
    rows.push([
      s.attributes.id.slice(0, 13),
      s.attributes.metadata?.name ?? '',
      cpuPercent(prev.cpu, s.cpu),
      decimalSize(mem),
      decimalSize(num(s.writableLayer?.usedBytes)),
      String(num(s.writableLayer?.inodesUsed)),
    ]);
  }
  return rows;
}

export const CONTAINER_STATS_HEAD = ['CONTAINER', 'NAME', 'CPU %', 'MEM', 'DISK', 'INODES'];
export const POD_STATS_HEAD = ['POD', 'POD ID', 'CPU %', 'MEM', 'NET RX', 'NET TX'];

/** Bytes received and sent over the pod's interfaces (loopback is not among them). */
export function podNetwork(linux: any): { rx: number; tx: number } | null {
  const ifaces: any[] = linux?.network?.interfaces ?? [];
  if (ifaces.length === 0) return linux?.network?.defaultInterface ? { rx: num(linux.network.defaultInterface.rxBytes), tx: num(linux.network.defaultInterface.txBytes) } : null;
  return { rx: ifaces.reduce((a, i) => a + num(i.rxBytes), 0), tx: ifaces.reduce((a, i) => a + num(i.txBytes), 0) };
}

/**
 * Rows of `corral statsp`: POD, POD ID, CPU %, MEM, NET RX, NET TX (bytes so far), sorted by
 * ID; pods without CPU and memory figures (not ready) are left out, as crictl does.
 */
export function podStatsRows(first: any[], second: any[]): string[][] {
  const before = new Map(first.map((s) => [s.attributes.id, s]));
  const rows: string[][] = [];
  for (const s of [...second].sort(byId)) {
    const prev = before.get(s.attributes.id);
    if (!prev) continue;
    const cpu = num(s.linux?.cpu?.usageCoreNanoSeconds);
    const mem = num(s.linux?.memory?.workingSetBytes);
    if (cpu === 0 && mem === 0) continue;
    const net = podNetwork(s.linux);
    rows.push([
      s.attributes.metadata?.name ?? '',
      s.attributes.id.slice(0, 13),
      cpuPercent(prev.linux?.cpu, s.linux?.cpu),
      decimalSize(mem),
      net ? decimalSize(net.rx) : '-',
      net ? decimalSize(net.tx) : '-',
    ]);
  }
  return rows;
}
