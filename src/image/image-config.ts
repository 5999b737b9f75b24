/**
 * The runtime part of an OCI image config (`config` in the config blob), read from hostile
 * JSON: every field Corral uses is checked for its type here, once, so the code that builds
 * a container never meets a number where it expects a list of strings. Fields Corral does
 * not use are dropped.
 */

export interface ImageRuntimeConfig {
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  Env: string[] | null;
  WorkingDir: string;
  User: string;
  StopSignal: string;
}

export class ImageConfigError extends Error {
  constructor(field: string, expected: string) {
    super(`config.${field} must be ${expected}`);
    this.name = 'ImageConfigError';
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringList(config: Record<string, unknown>, field: string): string[] | null {
  const v = config[field];
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw new ImageConfigError(field, 'a list of strings');
  if (v.some((s: string) => s.includes('\0'))) throw new ImageConfigError(field, 'free of NUL bytes');
  return v as string[];
}

function text(config: Record<string, unknown>, field: string): string {
  const v = config[field];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new ImageConfigError(field, 'a string');
  if (v.includes('\0')) throw new ImageConfigError(field, 'free of NUL bytes');
  return v;
}

/** The checked runtime config of an image config document; throws ImageConfigError naming the field. */
export function imageRuntimeConfig(doc: unknown): ImageRuntimeConfig {
  if (!isRecord(doc)) throw new ImageConfigError('', 'an object (the document is not)');
  const config = doc.config ?? {};
  if (!isRecord(config)) throw new ImageConfigError('', 'an object');
  return {
    Entrypoint: stringList(config, 'Entrypoint'),
    Cmd: stringList(config, 'Cmd'),
    Env: stringList(config, 'Env'),
    WorkingDir: text(config, 'WorkingDir'),
    User: text(config, 'User'),
    StopSignal: text(config, 'StopSignal'),
  };
}
