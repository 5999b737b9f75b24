/**
 * Preloaded with `node --import <this file's URL>?out=<file>`: appends the URL of every
 * module the process resolves to <file>, one a line, so a test can tell what a daemon loaded.
 * ESM resolution does not see the builtins that CommonJS packages require (grpc-js, pino), so
 * on SIGUSR2 it also appends `builtin:<id>` for every builtin loaded so far, then `builtins-end`.
 */
import { appendFileSync } from 'node:fs';
import { register } from 'node:module';

const out = new URL(import.meta.url).searchParams.get('out');
if (!out) throw new Error('module-trace: give the output file as ?out=<path> in the --import URL');
register('./module-trace-hooks.js', import.meta.url, { data: { out } });

process.on('SIGUSR2', () => {
  const loaded = (process as unknown as { moduleLoadList: string[] }).moduleLoadList;
  const builtins = loaded.filter((m) => m.startsWith('NativeModule ')).map((m) => `builtin:${m.slice('NativeModule '.length)}\n`);
  appendFileSync(out, `${builtins.join('')}builtins-end\n`);
});
