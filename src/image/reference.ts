/**
 * Image references as kubelet writes them, normalised the way containerd stores them:
 * `busybox` is `docker.io/library/busybox:latest`, `foo/bar@sha256:…` keeps its digest,
 * `localhost:5000/x` and `registry.k8s.io/pause:3.9` keep their registry host.
 *
 * Pure: no I/O. Every malformed reference is an InvalidReferenceError (a CorralError of
 * kind 'invalid-argument') whose message quotes the reference and says what is wrong with it.
 */
import { CorralError } from '../errors.js';

/** The registry a reference without a host refers to. */
export const DEFAULT_DOMAIN = 'docker.io';
/** The namespace of Docker Hub's official images (`busybox` → `library/busybox`). */
export const OFFICIAL_REPO_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';
/** Longest `domain/path` accepted, as the distribution spec bounds it. */
export const MAX_NAME_LENGTH = 255;

/** A parsed, normalised image reference. */
export interface ImageReference {
  /** Registry host with optional port: "docker.io", "registry.k8s.io", "127.0.0.1:5000". */
  readonly domain: string;
  /** Repository path inside the registry: "library/busybox", "pause". */
  readonly path: string;
  /** The tag; "latest" when the reference named neither a tag nor a digest. */
  readonly tag?: string;
  /** "sha256:<64 hex>" when the reference pins a digest. */
  readonly digest?: string;
  /** `domain/path`. */
  readonly name: string;
  /** `name[:tag][@digest]`, the fully normalised form. */
  toString(): string;
}

export class InvalidReferenceError extends CorralError {
  constructor(readonly reference: string, readonly reason: string) {
    super('invalid-argument', `invalid image reference "${reference}": ${reason}`);
    this.name = 'InvalidReferenceError';
  }
}

// One path component: lowercase alphanumerics joined by '.', '_', '__' or runs of '-'.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
// One DNS label of a registry host.
const DOMAIN_LABEL = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** True for "sha256:<64 lowercase hex>", the only digest form Corral stores. */
export function isDigest(s: string): boolean {
  return SHA256_DIGEST.test(s);
}

/**
 * Checks a digest string and returns it; the Error says what is wrong (unsupported
 * algorithm, wrong length or case). `what` names the digest in the message.
 */
export function validateDigest(s: string, what = 'digest'): string {
  if (SHA256_DIGEST.test(s)) return s;
  if (!ANY_DIGEST.test(s)) throw new Error(`${what} "${s}" is not of the form <algorithm>:<hex>`);
  const algorithm = s.slice(0, s.indexOf(':'));
  if (algorithm !== 'sha256') throw new Error(`${what} "${s}": unsupported digest algorithm "${algorithm}" (only sha256)`);
  throw new Error(`${what} "${s}": a sha256 digest is 64 lowercase hexadecimal characters`);
}

/** The hex part of a sha256 digest (validated). */
export function digestHex(digest: string): string {
  return validateDigest(digest).slice('sha256:'.length);
}

class Reference implements ImageReference {
  readonly name: string;

  constructor(readonly domain: string, readonly path: string, readonly tag: string | undefined, readonly digest: string | undefined) {
    this.name = `${domain}/${path}`;
  }

  toString(): string {
    return `${this.name}${this.tag !== undefined ? `:${this.tag}` : ''}${this.digest !== undefined ? `@${this.digest}` : ''}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/**
 * Parses and normalises an image reference. The first path component is a registry host
 * when it contains '.' or ':', is "localhost", or has uppercase letters; otherwise the
 * reference is on Docker Hub ("docker.io", with "library/" for single-component names).
 * With neither tag nor digest the tag is "latest"; a digest-only reference has no tag.
 */
export function parseReference(input: string): ImageReference {
  const fail = (reason: string): never => {
    throw new InvalidReferenceError(input, reason);
  };
  if (typeof input !== 'string' || input === '') fail('the reference is empty');
  if (/\s/.test(input)) fail('it contains whitespace');
  if (/^[a-f0-9]{64}$/.test(input)) fail('a 64-character hexadecimal string is an image ID, not a reference');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (digest.includes('@')) fail("more than one '@'");
    try {
      validateDigest(digest);
    } catch (e) {
      fail((e as Error).message);
    }
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) {
      fail(`bad tag "${tag}": a tag is 1 to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'`);
    }
  }
  if (rest === '') fail('the repository name is empty');

  let domain: string;
  let path: string;
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())) {
    domain = first;
    path = rest.slice(slash + 1);
    checkDomain(domain, fail);
  } else {
    domain = DEFAULT_DOMAIN;
    path = rest;
  }
  if (domain === 'index.docker.io') domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;

  if (path === '') fail('the repository path is empty');
  for (const component of path.split('/')) {
    if (component === '') fail(`empty path component in "${path}"`);
    if (component !== component.toLowerCase()) fail(`repository name "${path}" must be lowercase`);
    if (!PATH_COMPONENT.test(component)) {
      fail(`bad path component "${component}": lowercase letters and digits, separated by '.', '_', '__' or '-'`);
    }
  }
  if (domain.length + 1 + path.length > MAX_NAME_LENGTH) fail(`the name is longer than ${MAX_NAME_LENGTH} characters`);

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return new Reference(domain, path, tag, digest);
}

function checkDomain(domain: string, fail: (reason: string) => never): void {
  let host = domain;
  let port: string | undefined;
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    if (close < 0) fail(`bad registry host "${domain}": unclosed '['`);
    const inside = host.slice(1, close);
    if (!/^[0-9a-fA-F:.]+$/.test(inside) || !inside.includes(':')) fail(`bad registry host "${domain}": not an IPv6 address`);
    const after = host.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':')) fail(`bad registry host "${domain}"`);
      port = after.slice(1);
    }
    host = '';
  } else {
    const c = host.indexOf(':');
    if (c >= 0) {
      port = host.slice(c + 1);
      host = host.slice(0, c);
    }
    if (host === '') fail(`bad registry host "${domain}": empty host name`);
    for (const label of host.split('.')) {
      if (!DOMAIN_LABEL.test(label)) fail(`bad registry host "${domain}": "${label}" is not a valid host name label`);
    }
  }
  if (port !== undefined && (!/^[0-9]+$/.test(port) || Number(port) < 1 || Number(port) > 65535)) {
    fail(`bad registry host "${domain}": port "${port}" is not a number from 1 to 65535`);
  }
}

/** Parses without throwing: undefined for a malformed reference. */
export function tryParseReference(input: string): ImageReference | undefined {
  try {
    return parseReference(input);
  } catch {
    return undefined;
  }
}

/** The normalised string form of a reference (`busybox` → `docker.io/library/busybox:latest`). */
export function normalizeReference(input: string): string {
  return parseReference(input).toString();
}

function asReference(ref: ImageReference | string): ImageReference {
  return typeof ref === 'string' ? parseReference(ref) : ref;
}

/** The short form people type: `docker.io/library/busybox` → `busybox`, `docker.io/foo/bar` → `foo/bar`. No tag or digest. */
export function familiarName(ref: ImageReference | string): string {
  const r = asReference(ref);
  if (r.domain !== DEFAULT_DOMAIN) return r.name;
  if (r.path.startsWith(OFFICIAL_REPO_PREFIX) && r.path.split('/').length === 2) return r.path.slice(OFFICIAL_REPO_PREFIX.length);
  return r.path;
}

/** The familiar name with tag and digest: `busybox:latest`, `foo/bar@sha256:…`. */
export function familiarString(ref: ImageReference | string): string {
  const r = asReference(ref);
  return `${familiarName(r)}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** The `name:tag` an image is listed under (CRI repo_tags); undefined for a digest-only reference. */
export function repoTag(ref: ImageReference | string): string | undefined {
  const r = asReference(ref);
  return r.tag !== undefined ? `${r.name}:${r.tag}` : undefined;
}

/**
 * The `name@digest` an image is listed under (CRI repo_digests): the given digest (the
 * manifest or index digest a pull resolved), else the reference's own.
 */
export function repoDigest(ref: ImageReference | string, digest?: string): string | undefined {
  const r = asReference(ref);
  const d = digest ?? r.digest;
  if (d === undefined) return undefined;
  return `${r.name}@${validateDigest(d)}`;
}

/** The tag or digest to ask the registry's manifests endpoint for (the digest wins). */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}
