/** The module-resolution hooks of module-trace.ts (they run on Node's loader thread). */
import { appendFileSync } from 'node:fs';

let out: string | undefined;

export function initialize(data: { out: string }): void {
  out = data.out;
}

type NextResolve = (specifier: string, context: unknown) => Promise<{ url: string }>;

export async function resolve(specifier: string, context: unknown, next: NextResolve): Promise<{ url: string }> {
  const resolved = await next(specifier, context);
  if (out) appendFileSync(out, `${resolved.url}\n`);
  return resolved;
}

