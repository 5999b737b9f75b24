import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cachedRoot: string | undefined;

/** The package root (the folder with package.json), whether running from src/ via tsx or from dist/. */
export function packageRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('corral: cannot find the package root (package.json) above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  cachedRoot = dir;
  return dir;
}

/** A helper program compiled from native/ by scripts/build-native.sh (corral-pause, corral-nshelper, corral-fsnodes). */
export function nativeBinary(name: string): string {
  return path.join(packageRoot(), 'dist', 'native', name);
}

/** Corral's CRI proto definition. */
export function protoFile(): string {
  return path.join(packageRoot(), 'proto', 'runtime', 'v1', 'api.proto');
}
