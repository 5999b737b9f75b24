/**
 * The domain does not know the transport: nothing under the domain directories imports
 * gRPC or the CRI facade (src/cri/). Errors there are CorralErrors (src/errors.ts); the
 * facade alone turns them into gRPC statuses (src/cri/errors.ts). Nor does it know the
 * metrics: it reports to a RuntimeObserver (src/observer.ts), which src/metrics/ implements
 * with prom-client; and prom-client is loaded only when metrics are on (import() of src/metrics/).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Tests run from dist/test/unit/; the sources are read, not the compiled output.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const srcDir = path.join(repoRoot, 'src');

const DOMAIN_DIRS = ['sandbox', 'container', 'image', 'oci', 'network', 'store', 'util', 'config', 'events'];
const DOMAIN_FILES = ['errors.ts', 'observer.ts'];
const FORBIDDEN_PACKAGES = ['@grpc/grpc-js', '@grpc/proto-loader', 'prom-client'];
const facadeDir = path.join(srcDir, 'cri');
const metricsDir = path.join(srcDir, 'metrics');

/**
 * Every module specifier of `import … from`, `import '…'`, `export … from` and (unless
 * staticOnly) `import('…')`, with its line.
 */
function moduleSpecifiers(source: string, staticOnly = false): { specifier: string; line: number }[] {
  const found: { specifier: string; line: number }[] = [];
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?[^'";]*?\bfrom\s*(['"])([^'"]+)\1/g,
    /\bimport\s*(['"])([^'"]+)\1/g,
    ...(staticOnly ? [] : [/\bimport\s*\(\s*(['"])([^'"]+)\1\s*\)/g]),
  ];
  for (const re of patterns) {
    for (const m of source.matchAll(re)) {
      const line = source.slice(0, m.index! + m[0].lastIndexOf(m[2]!)).split('\n').length;
      found.push({ specifier: m[2]!, line });
    }
  }
  return found;
}

function tsFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile() && d.name.endsWith('.ts'))
    .map((d) => path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name));
}

function violations(file: string): string[] {
  const source = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const { specifier, line } of moduleSpecifiers(source)) {
    const where = `${path.relative(repoRoot, file)}:${line}`;
    if (FORBIDDEN_PACKAGES.some((p) => specifier === p || specifier.startsWith(`${p}/`))) {
      out.push(`${where} imports ${specifier}`);
    } else if (specifier.startsWith('.')) {
      const target = path.resolve(path.dirname(file), specifier);
      if (target === facadeDir || target.startsWith(facadeDir + path.sep)) out.push(`${where} imports ${specifier} (the CRI facade)`);
      if (target === metricsDir || target.startsWith(metricsDir + path.sep)) out.push(`${where} imports ${specifier} (the metrics; report to a RuntimeObserver)`);
    }
  }
  return out;
}

test('the specifier scanner sees every form of import and export', () => {
  const src = [
    "import { a } from '../cri/errors.js';",
    "import type { B } from '@grpc/grpc-js';",
    'import {',
    '  c,',
    "} from '@grpc/proto-loader';",
    "import './side-effect.js';",
    "export * from '../../cri/server.js';",
    "export { d } from './d.js';",
    "const e = await import('../cri/proto.js');",
  ].join('\n');
  assert.deepEqual(
    moduleSpecifiers(src).sort((x, y) => x.line - y.line),
    [
      { specifier: '../cri/errors.js', line: 1 },
      { specifier: '@grpc/grpc-js', line: 2 },
      { specifier: '@grpc/proto-loader', line: 5 },
      { specifier: './side-effect.js', line: 6 },
      { specifier: '../../cri/server.js', line: 7 },
      { specifier: './d.js', line: 8 },
      { specifier: '../cri/proto.js', line: 9 },
    ],
  );
});

test('no domain module imports gRPC, the CRI facade, prom-client or src/metrics/', () => {
  const files = [...DOMAIN_DIRS.flatMap((d) => tsFiles(path.join(srcDir, d))), ...DOMAIN_FILES.map((f) => path.join(srcDir, f))];
  assert.ok(files.length > 50, `expected the domain sources under ${srcDir}, found ${files.length} files`);
  const found = files.filter((f) => fs.existsSync(f)).flatMap(violations);
  assert.deepEqual(found, [], `domain modules must not know the transport; map errors in src/cri/errors.ts instead:\n  ${found.join('\n  ')}`);
});

/** The compiled modules (what Node loads; type-only imports are gone): tests run from dist/test/unit/. */
const distSrcDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');

test('prom-client is loaded only when metrics are on: only src/metrics/ imports it, and nothing imports src/metrics/ but with import()', () => {
  const distMetricsDir = path.join(distSrcDir, 'metrics');
  const files = fs.readdirSync(distSrcDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js')).map((f) => path.join(distSrcDir, f));
  assert.ok(files.length > 50, `expected the compiled sources under ${distSrcDir}, found ${files.length} files`);
  const inMetrics = (f: string) => f === distMetricsDir || f.startsWith(distMetricsDir + path.sep);
  const found: string[] = [];
  let dynamicImports = 0;
  for (const file of files.filter((f) => !inMetrics(f))) {
    const source = fs.readFileSync(file, 'utf8');
    const statics = new Set(moduleSpecifiers(source, true).map((s) => `${s.specifier}:${s.line}`));
    for (const { specifier, line } of moduleSpecifiers(source)) {
      const target = specifier.startsWith('.') ? path.resolve(path.dirname(file), specifier) : '';
      if (specifier !== 'prom-client' && !specifier.startsWith('prom-client/') && !inMetrics(target)) continue;
      if (statics.has(`${specifier}:${line}`)) found.push(`${path.relative(distSrcDir, file)}:${line} imports ${specifier}`);
      else if (inMetrics(target)) dynamicImports++;
      else found.push(`${path.relative(distSrcDir, file)}:${line} loads ${specifier} outside src/metrics/`);
    }
  }
  assert.deepEqual(found, [], `a daemon without metrics_address must not load prom-client (idle memory); load src/metrics/ with import() when metrics are on:\n  ${found.join('\n  ')}`);
  assert.ok(dynamicImports >= 1, 'the daemon loads src/metrics/ with import() when metrics_address is set');
  assert.ok(fs.readFileSync(path.join(distMetricsDir, 'registry.js'), 'utf8').includes("from 'prom-client'"), 'src/metrics/ is where prom-client is used');
});
