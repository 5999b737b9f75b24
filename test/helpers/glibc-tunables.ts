/** What glibc makes of a GLIBC_TUNABLES value: `ld.so --list-tunables` prints the tunables in effect. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { execFile } from '../../src/util/exec.js';

/** The dynamic loader this node runs under (glibc's ld.so: `--list-tunables` prints the tunables in effect). */
function dynamicLoader(): string {
  const m = /\s(\/\S*\/ld-linux[^\s/]*\.so\.\d+)$/m.exec(readFileSync('/proc/self/maps', 'utf8'));
  assert.ok(m, 'node runs under glibc ld.so');
  return m[1]!;
}

/** The tunables glibc has in effect with this GLIBC_TUNABLES, as name → value (hex as printed). */
export async function tunablesInEffect(glibcTunables: string | undefined): Promise<Map<string, string>> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
  if (glibcTunables !== undefined) env.GLIBC_TUNABLES = glibcTunables;
  const r = await execFile(dynamicLoader(), ['--list-tunables'], { env });
  assert.equal(r.code, 0, r.stderr);
  return new Map(r.stdout.split('\n').flatMap((l) => {
    const m = /^(\S+): (\S+)/.exec(l);
    return m ? [[m[1]!, m[2]!] as [string, string]] : [];
  }));
}

