/**
 * Capability args: the per-pod runtime data a plugin can ask for through its
 * `capabilities` object, and the conversions from CRI/Kubernetes inputs.
 */
import { CniError } from './errors.js';

/** A host port mapping as CRI gives it (protocol any case; "TCP" becomes "tcp"). */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

/** Traffic shaping in bits per second (rates) and bits (bursts). */
export interface BandwidthLimits {
  ingressRate: number;
  ingressBurst: number;
  egressRate: number;
  egressBurst: number;
}

export interface DnsCapability {
  servers: string[];
  searches: string[];
  options: string[];
}

export interface IpRange {
  subnet: string;
  rangeStart?: string;
  rangeEnd?: string;
  gateway?: string;
}

export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';

export interface CapabilityInputs {
  portMappings?: PortMapping[];
  bandwidth?: BandwidthLimits;
  dns?: DnsCapability;
  ipRanges?: IpRange[][];
  cgroupPath?: string;
  podAnnotations?: Record<string, string>;
}

/** The capability args map for a pod (only keys that have something to say). */
export function buildCapabilityArgs(inputs: CapabilityInputs): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  const ports = (inputs.portMappings ?? [])
    .filter((p) => p.hostPort > 0)
    .map((p) => {
      const m: Record<string, unknown> = { hostPort: p.hostPort, containerPort: p.containerPort, protocol: (p.protocol || 'tcp').toLowerCase() };
      if (p.hostIP) m.hostIP = p.hostIP;
      return m;
    });
  if (ports.length > 0) args.portMappings = ports;
  if (inputs.bandwidth) args.bandwidth = { ...inputs.bandwidth };
  if (inputs.dns) args.dns = { servers: [...inputs.dns.servers], searches: [...inputs.dns.searches], options: [...inputs.dns.options] };
  if (inputs.ipRanges && inputs.ipRanges.length > 0) args.ipRanges = inputs.ipRanges.map((set) => set.map((r) => ({ ...r })));
  if (inputs.cgroupPath) args.cgroupPath = inputs.cgroupPath;
  if (inputs.podAnnotations) args[POD_ANNOTATIONS_CAPABILITY] = { ...inputs.podAnnotations };
  return args;
}

const QUANTITY_RE = /^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$/;

/**
 * Parses a Kubernetes resource quantity ("10M", "1Gi", "1.5k", "2e6", "500m") and
 * rounds it up to a whole number, as Kubernetes' Value() does. Throws on bad syntax.
 */
export function parseQuantity(text: string): bigint {
  const m = QUANTITY_RE.exec(text.trim());
  if (!m) throw new CniError(`invalid quantity ${JSON.stringify(text)}`);
  const negative = m[1] === '-';
  const [whole, frac = ''] = m[2]!.split('.');
  let num = BigInt((whole || '0') + frac);
  let den = 10n ** BigInt(frac.length);
  const suffix = m[3] ?? '';
  const binary: Record<string, bigint> = { Ki: 1n << 10n, Mi: 1n << 20n, Gi: 1n << 30n, Ti: 1n << 40n, Pi: 1n << 50n, Ei: 1n << 60n };
  const decimal: Record<string, number> = { n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
  let exp = 0;
  if (suffix in binary) num *= binary[suffix]!;
  else if (suffix in decimal) exp = decimal[suffix]!;
  else exp = Number(suffix.slice(1));
  if (Math.abs(exp) > 100) throw new CniError(`invalid quantity ${JSON.stringify(text)}: exponent out of range`);
  if (exp >= 0) num *= 10n ** BigInt(exp);
  else den *= 10n ** BigInt(-exp);
  let value = num / den;
  if (value * den !== num) value += 1n; // round up
  return negative ? -value : value;
}

export const INGRESS_BANDWIDTH_ANNOTATION = 'kubernetes.io/ingress-bandwidth';
export const EGRESS_BANDWIDTH_ANNOTATION = 'kubernetes.io/egress-bandwidth';
/** Burst sent with annotation-derived limits: 2^32-1 bits. */
export const DEFAULT_BANDWIDTH_BURST = 2 ** 32 - 1;

const MIN_BANDWIDTH = 1000n; // 1 kbit/s
const MAX_BANDWIDTH = 10n ** 15n; // 1 Pbit/s

function bandwidthValue(annotations: Record<string, string>, key: string): number | undefined {
  const text = annotations[key];
  if (text === undefined) return undefined;
  let v: bigint;
  try {
    v = parseQuantity(text);
  } catch {
    throw new CniError(`pod annotation ${key}: ${JSON.stringify(text)} is not a valid quantity (examples: "10M", "1Gi")`);
  }
  if (v < MIN_BANDWIDTH) throw new CniError(`pod annotation ${key}: ${text} is unreasonably small (minimum 1k bits/s)`);
  if (v > MAX_BANDWIDTH) throw new CniError(`pod annotation ${key}: ${text} is unreasonably large (maximum 1P bits/s)`);
  return Number(v);
}

/**
 * Bandwidth limits from the pod annotations kubernetes.io/ingress-bandwidth and
 * kubernetes.io/egress-bandwidth, in bits/s; undefined when neither is set.
 * Throws CniError on a bad or unreasonable quantity.
 */
export function bandwidthFromAnnotations(annotations: Record<string, string> | undefined): BandwidthLimits | undefined {
  if (!annotations) return undefined;
  const ingress = bandwidthValue(annotations, INGRESS_BANDWIDTH_ANNOTATION);
  const egress = bandwidthValue(annotations, EGRESS_BANDWIDTH_ANNOTATION);
  if (ingress === undefined && egress === undefined) return undefined;
  return {
    ingressRate: ingress ?? 0,
    ingressBurst: ingress !== undefined ? DEFAULT_BANDWIDTH_BURST : 0,
    egressRate: egress ?? 0,
    egressBurst: egress !== undefined ? DEFAULT_BANDWIDTH_BURST : 0,
  };
}
