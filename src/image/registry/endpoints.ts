/**
 * Where to fetch a registry host's content from: its configured mirrors in order, then
 * the registry itself. Mirrors serve the same repository paths (`registry.k8s.io/pause`
 * is `/v2/pause/…` on a mirror too). The registry itself is spoken to over HTTPS, or
 * plain HTTP when it is configured `insecure` or is a loopback host (localhost,
 * 127.0.0.0/8, ::1). Docker Hub's API lives at registry-1.docker.io.
 */
import type { RegistryConfig } from '../../config/config.js';
import { DEFAULT_DOMAIN } from '../reference.js';

export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

export interface Endpoint {
  /** The base URL, as configured for a mirror or derived for the registry: "https://registry.k8s.io". */
  url: string;
  /** The API root every request path is appended to: `${url}/v2`. */
  api: string;
  /** host[:port] of the endpoint (for credential matching and logs). */
  host: string;
  mirror: boolean;
  /** Verify the server certificate (https only). */
  tlsVerify: boolean;
  /** Extra CA bundle file trusted on top of the system CAs; empty = none. */
  caFile: string;
}

/** Hosts spoken to over plain HTTP by default. */
export function isLoopbackHost(host: string): boolean {
  let h = host;
  if (h.startsWith('[')) h = h.slice(1, h.indexOf(']'));
  else if (h.includes(':') && h.indexOf(':') === h.lastIndexOf(':')) h = h.slice(0, h.indexOf(':'));
  h = h.toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The settings for a registry host; docker.io also answers to its API host's key. */
export function registryConfigFor(domain: string, registries: Record<string, RegistryConfig> = {}): RegistryConfig | undefined {
  return registries[domain] ?? (domain === DEFAULT_DOMAIN ? registries[DOCKER_HUB_API_HOST] ?? registries['index.docker.io'] : undefined);
}

/** Mirrors first (configured order), the registry itself last. */
export function registryEndpoints(domain: string, registries: Record<string, RegistryConfig> = {}): Endpoint[] {
  const cfg = registryConfigFor(domain, registries);
  const tlsVerify = cfg?.tlsVerify ?? true;
  const caFile = cfg?.caFile ?? '';
  const out: Endpoint[] = [];
  for (const m of cfg?.mirrors ?? []) {
    const u = new URL(m);
    const base = `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
    const api = /\/v2$/.test(base) ? base : `${base}/v2`;
    out.push({ url: base.replace(/\/v2$/, '') || base, api, host: u.host, mirror: true, tlsVerify, caFile });
  }
  const host = domain === DEFAULT_DOMAIN ? DOCKER_HUB_API_HOST : domain;
  const scheme = cfg?.insecure || isLoopbackHost(host) ? 'http' : 'https';
  const url = `${scheme}://${host}`;
  out.push({ url, api: `${url}/v2`, host, mirror: false, tlsVerify, caFile });
  return out;
}
