/**
 * Runs the real critest through test/conformance/run-critest.ts (local stand-in images, a
 * daemon of its own) and reads its summary, for the conformance tests.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';

export interface CritestRun {
  code: number | null;
  /** stdout and stderr together. */
  text: string;
  /** Ginkgo's "Ran R of T Specs ... P Passed | F Failed", when it got that far. */
  summary: { ran: number; total: number; passed: number; failed: number } | null;
  /** The [FAIL] lines, once each. */
  failed: string[];
}

/** Why critest cannot run here, or false. */
export async function critestMissing(): Promise<string | false> {
  const found = await execFile('sh', ['-c', 'command -v critest']);
  return found.code !== 0 ? 'critest is not installed (bash scripts/install-deps.sh installs it from ../shared/tools)' : false;
}

/** run-critest.js with `args` (--focus, --skip, --runtime-handler ...). */
export async function runCritest(args: string[]): Promise<CritestRun> {
  const runner = path.join(packageRoot(), 'dist', 'test', 'conformance', 'run-critest.js');
  const out: Buffer[] = [];
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(process.execPath, [runner, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => out.push(b));
    child.on('error', reject);
    child.on('close', resolve);
  });
  const text = Buffer.concat(out).toString();
  const m = /Ran (\d+) of (\d+) Specs[^\n]*\n(?:[^\n]*\n)?[^\n]*?(\d+) Passed \| (\d+) Failed/.exec(text);
  return {
    code,
    text,
    summary: m ? { ran: Number(m[1]), total: Number(m[2]), passed: Number(m[3]), failed: Number(m[4]) } : null,
    failed: [...new Set(text.match(/\[FAIL\][^\n]*/g) ?? [])],
  };
}
