/**
 * CNI spec versions Corral can speak, and how to compare them.
 */

/** Every spec version Corral can send to plugins and read results of, oldest first. */
export const SUPPORTED_CNI_VERSIONS: readonly string[] = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** The version of Corral's internal result shape. */
export const CURRENT_CNI_VERSION = '1.1.0';

/** Splits "X.Y.Z" into numbers; undefined when it is not of that form. */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** Negative when a < b, 0 when equal, positive when a > b. Unparseable versions sort lowest. */
export function compareVersions(a: string, b: string): number {
  const pa = parseVersion(a) ?? [-1, -1, -1];
  const pb = parseVersion(b) ?? [-1, -1, -1];
  for (let i = 0; i < 3; i++) {
    if (pa[i] !== pb[i]) return pa[i]! - pb[i]!;
  }
  return 0;
}

export function isSupportedVersion(v: string): boolean {
  return SUPPORTED_CNI_VERSIONS.includes(v);
}

/** True when `v` is at least `min` (e.g. whether DEL gets prevResult: atLeast(v, '0.4.0')). */
export function atLeast(v: string, min: string): boolean {
  return compareVersions(v, min) >= 0;
}
