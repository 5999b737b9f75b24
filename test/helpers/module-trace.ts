/**
 * Preloaded with `node --import <this file's URL>?out=<file>`: appends the URL of every
 * module the process resolves to <file>, one a line, so a test can tell what a daemon loaded.
 */
import { register } from 'node:module';

const out = new URL(import.meta.url).searchParams.get('out');
if (!out) throw new Error('module-trace: give the output file as ?out=<path> in the --import URL');
register('./module-trace-hooks.js', import.meta.url, { data: { out } });
