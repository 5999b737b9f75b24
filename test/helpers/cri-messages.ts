/**
 * CRI messages as tests write them: only the fields a test cares about. The server hands
 * the domain complete messages (every field present, src/cri-api/types.ts); the domain
 * reads each field defensively, so a partial one exercises the same paths.
 */
import type { ContainerConfig, PodSandboxConfig } from '../../src/cri-api/types.js';

export type DeepPartial<T> = T extends Buffer ? T
  : T extends (infer U)[] ? DeepPartial<U>[]
  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> | null }
  : T;

/** A partial message typed as the whole (a type-level cast: the value is passed on as is). */
export function partialMessage<T>(value: DeepPartial<T>): T {
  return value as T;
}

export const podConfig = (value: DeepPartial<PodSandboxConfig>): PodSandboxConfig => partialMessage<PodSandboxConfig>(value);
export const containerConfig = (value: DeepPartial<ContainerConfig>): ContainerConfig => partialMessage<ContainerConfig>(value);
