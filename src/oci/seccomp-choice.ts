/**
 * Which seccomp profile a sandbox or container asked for, from either CRI field: the
 * structured `seccomp` (RuntimeDefault, Unconfined, Localhost + localhost_ref) or the
 * older `seccomp_profile_path` string that kubelets of the 1.2x line still send
 * ("runtime/default", "docker/default", "unconfined", "localhost/<absolute path>").
 */
import { invalidArgument } from '../errors.js';
import type { SeccompChoice } from './seccomp.js';
import type { SecurityProfile } from '../cri-api/types.js';
import { MAX_SECCOMP_PROFILE_BYTES, SafeReadError, readRegularFile } from '../util/safe-read.js';

/**
 * Reads a localhost profile from the path the CRI client names: symlinks followed (kubelet's
 * profile dirs may be ConfigMap mounts), but only a regular file of at most
 * MAX_SECCOMP_PROFILE_BYTES (4 MiB), so a FIFO or device there is refused at once.
 */
export async function readSeccompProfile(file: string): Promise<string> {
  return (await readRegularFile(file, { maxBytes: MAX_SECCOMP_PROFILE_BYTES })).toString('utf8');
}

export async function resolveSeccomp(securityContext: { seccomp?: Partial<SecurityProfile> | null; seccompProfilePath?: string } | null | undefined, readFile: (path: string) => Promise<string> = readSeccompProfile): Promise<SeccompChoice> {
  const structured = securityContext?.seccomp;
  const type = structured?.profileType;
  if (type === 'RuntimeDefault') return { type: 'runtimeDefault' };
  if (type === 'Localhost') return localhost(structured!.localhostRef ?? '', readFile);
  if (type === 'Unconfined') return { type: 'unconfined' };
  const p: string = securityContext?.seccompProfilePath ?? '';
  if (p === '' || p === 'unconfined') return { type: 'unconfined' };
  if (p === 'runtime/default' || p === 'docker/default') return { type: 'runtimeDefault' };
  if (p.startsWith('localhost/')) return localhost(p.slice('localhost/'.length), readFile);
  throw invalidArgument(`seccomp profile "${p}" is not one of runtime/default, docker/default, unconfined or localhost/<path>`);
}

async function localhost(file: string, readFile: (path: string) => Promise<string>): Promise<SeccompChoice> {
  if (!file.startsWith('/')) throw invalidArgument(`a localhost seccomp profile must be an absolute path, got "${file}"`);
  let text: string;
  try {
    text = await readFile(file);
  } catch (e) {
    throw invalidArgument(`cannot read the seccomp profile ${file}: ${e instanceof SafeReadError ? e.reason : (e as Error).message}`);
  }
  try {
    return { type: 'localhost', profile: JSON.parse(text) as object };
  } catch (e) {
    throw invalidArgument(`the seccomp profile ${file} is not JSON: ${(e as Error).message}`);
  }
}
