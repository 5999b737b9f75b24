import { existsSync, promises as fs, constants as fsConstants } from 'node:fs';
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

/** A helper program compiled from native/ by scripts/build-native.sh (corral-pause, corral-nshelper, corral-unpack). */
export function nativeBinary(name: string): string {
  return path.join(packageRoot(), 'dist', 'native', name);
}

/** Corral's CRI proto definition. */
export function protoFile(): string {
  return path.join(packageRoot(), 'proto', 'runtime', 'v1', 'api.proto');
}

/** Whether p is a regular file this process may execute. */
export async function isExecutable(p: string): Promise<boolean> {
  try {
    await fs.access(p, fsConstants.X_OK);
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
}

/** An absolute path for a program: as given when it has a slash, else the first match in PATH. */
export async function findExecutable(bin: string): Promise<string | undefined> {
  if (bin.includes('/')) return (await isExecutable(bin)) ? bin : undefined;
  for (const d of (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const p = path.join(d, bin);
    if (await isExecutable(p)) return p;
  }
  return undefined;
}
