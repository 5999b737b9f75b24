/**
 * What an idle daemon has loaded. Each module costs memory for as long as the daemon runs
 * (its source, compiled code and data stay on the V8 heap; each builtin also touches node's
 * own pages), so what a start does not need is loaded on first use. A static import added
 * somewhere on the start path would silently undo that: this test starts a real daemon and
 * lists the modules and the node builtins it has loaded once it answers calls.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { TestDaemon } from '../helpers/daemon.js';
import { packageRoot } from '../../src/util/paths.js';

const TRACE_HOOK = path.join(packageRoot(), 'dist/test/helpers/module-trace.js');

/** Modules a start does not need, with what loads them. */
const LOADED_ON_FIRST_USE: [RegExp, string][] = [
  [/\/node_modules\/prom-client\//, 'metrics, only with metrics_address'],
  [/\/dist\/src\/metrics\//, 'metrics, only with metrics_address'],
  [/\/dist\/src\/streaming\/server\.js/, 'the streaming server: the first exec/attach/port-forward'],
  [/\/dist\/src\/streaming\/backend\//, 'the streaming runtime: the first exec/attach/port-forward'],
  [/\/node_modules\/ws\//, 'websockets: the first streaming session'],
  [/\/dist\/src\/image\/registry\/(?!errors\.js)/, 'the registry client: the first pull (its error types are loaded)'],
  [/\/node_modules\/tar-stream\//, 'archives: corral image import'],
  [/\/dist\/src\/oci\/conmon\.js/, "conmon's driver: the first container"],
  [/\/dist\/src\/cri\/client\.js/, 'the CRI client: CLI commands only'],
];

/** Node builtins an idle daemon does not need. */
const BUILTINS_ON_FIRST_USE: [string, string][] = [
  ['https', 'registry and TLS streaming clients'],
  ['internal/deps/undici/undici', 'fetch(): Corral speaks HTTP through node:http'],
  ['internal/webstreams/readablestream', 'web streams'],
  ['repl', 'nothing in the daemon'],
];

let d: TestDaemon;
let modules: string[];
let builtins: Set<string>;

before(async () => {
  const trace = (t: TestDaemon) => path.join(t.dir, 'modules.txt');
  d = new TestDaemon({ nodeArgs: (t) => ['--import', `${pathToFileURL(TRACE_HOOK).href}?out=${encodeURIComponent(trace(t))}`] });
  await d.start(); // returns once the daemon answers Version
  process.kill(d.pid!, 'SIGUSR2'); // the trace hook appends the builtins loaded so far
  let text = '';
  for (let i = 0; i < 100 && !text.includes('builtins-end\n'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    text = await fs.readFile(trace(d), 'utf8');
  }
  assert.ok(text.includes('builtins-end\n'), 'the trace hook listed the builtins');
  const lines = text.split('\n').filter(Boolean);
  modules = lines.filter((l) => !l.startsWith('builtin:'));
  builtins = new Set(lines.filter((l) => l.startsWith('builtin:')).map((l) => l.slice('builtin:'.length)));
});

after(async () => {
  await d?.cleanup();
});

test('idle daemon: modules a start does not need are not loaded', () => {
  // The trace sees what the daemon loaded, so an absence below means something.
  assert.ok(modules.some((m) => /\/dist\/src\/daemon\.js$/.test(m)), 'the trace saw the daemon load');
  assert.ok(modules.some((m) => /\/node_modules\/@grpc\/grpc-js\//.test(m)), 'the trace saw grpc-js load');
  const loaded = LOADED_ON_FIRST_USE.flatMap(([re, why]) => modules.filter((m) => re.test(m)).slice(0, 1).map((m) => `${m} (${why})`));
  assert.deepEqual(loaded, [], 'loaded at start although a start does not use them');
});

test('idle daemon: builtins a start does not need are not loaded', () => {
  assert.ok(builtins.has('http2'), 'the builtin list is read (grpc-js serves over http2)');
  const loaded = BUILTINS_ON_FIRST_USE.filter(([b]) => builtins.has(b)).map(([b, why]) => `${b} (${why})`);
  assert.deepEqual(loaded, [], 'builtins loaded at start although a start does not use them');
});
