/**
 * Fake CNI plugins for unit tests: tiny shell scripts in a temp bin dir that record
 * their environment and stdin and answer with whatever the test configured.
 *
 * For a plugin named P, invoked with command C on interface I, the script:
 *   - appends "C P I" to <state>/calls.log
 *   - saves stdin to <state>/P.C.I.stdin and the environment to <state>/P.C.I.env
 *   - writes <state>/P.C.out to stdout and <state>/P.C.err to stderr (when present)
 *   - sleeps <state>/P.C.sleep seconds (when present)
 *   - exits with the number in <state>/P.C.code (default 0)
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface FakeCni {
  root: string;
  binDir: string;
  stateDir: string;
  confDir: string;
  cacheDir: string;
  /** Creates (or re-creates) an executable fake plugin. */
  addPlugin(name: string): Promise<void>;
  /** Configures what plugin `name` answers to `command`. */
  respond(name: string, command: string, r: { stdout?: unknown; stderr?: string; code?: number; sleepSeconds?: number }): Promise<void>;
  calls(): Promise<string[]>;
  stdin(name: string, command: string, ifName: string): Promise<Record<string, unknown>>;
  env(name: string, command: string, ifName: string): Promise<Record<string, string>>;
  writeConf(file: string, content: unknown): Promise<void>;
  cleanup(): Promise<void>;
}

function script(stateDir: string): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return `#!/bin/sh
d=${q(stateDir)}
p=$(basename "$0")
c="$CNI_COMMAND"
i="$CNI_IFNAME"
cat > "$d/$p.$c.$i.stdin"
env > "$d/$p.$c.$i.env"
echo "$c $p $i" >> "$d/calls.log"
[ -f "$d/$p.$c.sleep" ] && sleep "$(cat "$d/$p.$c.sleep")"
[ -f "$d/$p.$c.out" ] && cat "$d/$p.$c.out"
[ -f "$d/$p.$c.err" ] && cat "$d/$p.$c.err" >&2
code=0
[ -f "$d/$p.$c.code" ] && code=$(cat "$d/$p.$c.code")
exit "$code"
`;
}

export async function makeFakeCni(): Promise<FakeCni> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cni-unit-'));
  const binDir = path.join(root, 'bin');
  const stateDir = path.join(root, 'state');
  const confDir = path.join(root, 'net.d');
  const cacheDir = path.join(root, 'cache');
  await Promise.all([binDir, stateDir, confDir].map((d) => fs.mkdir(d, { recursive: true })));
  const fake: FakeCni = {
    root,
    binDir,
    stateDir,
    confDir,
    cacheDir,
    async addPlugin(name) {
      await fs.writeFile(path.join(binDir, name), script(stateDir), { mode: 0o755 });
    },
    async respond(name, command, r) {
      const base = path.join(stateDir, `${name}.${command}`);
      if (r.stdout !== undefined) await fs.writeFile(`${base}.out`, typeof r.stdout === 'string' ? r.stdout : JSON.stringify(r.stdout));
      else await fs.rm(`${base}.out`, { force: true });
      if (r.stderr !== undefined) await fs.writeFile(`${base}.err`, r.stderr);
      else await fs.rm(`${base}.err`, { force: true });
      await fs.writeFile(`${base}.code`, String(r.code ?? 0));
      if (r.sleepSeconds !== undefined) await fs.writeFile(`${base}.sleep`, String(r.sleepSeconds));
      else await fs.rm(`${base}.sleep`, { force: true });
    },
    async calls() {
      try {
        return (await fs.readFile(path.join(stateDir, 'calls.log'), 'utf8')).split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
    async stdin(name, command, ifName) {
      return JSON.parse(await fs.readFile(path.join(stateDir, `${name}.${command}.${ifName}.stdin`), 'utf8')) as Record<string, unknown>;
    },
    async env(name, command, ifName) {
      const text = await fs.readFile(path.join(stateDir, `${name}.${command}.${ifName}.env`), 'utf8');
      const env: Record<string, string> = {};
      for (const line of text.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
      }
      return env;
    },
    async writeConf(file, content) {
      await fs.writeFile(path.join(confDir, file), typeof content === 'string' ? content : JSON.stringify(content));
    },
    async cleanup() {
      await fs.rm(root, { recursive: true, force: true });
    },
  };
  return fake;
}

/** A 1.0.0 result with the container interface eth0 (index 1) and the given addresses on it. */
export function fakeResult(addresses: string[], version = '1.0.0', ifName = 'eth0'): Record<string, unknown> {
  return {
    cniVersion: version,
    interfaces: [{ name: 'veth0', mac: '00:11:22:33:44:55' }, { name: ifName, mac: '00:11:22:33:44:66', sandbox: '/var/run/netns/x' }],
    ips: addresses.map((address) => ({ address, interface: 1 })),
    routes: [{ dst: '0.0.0.0/0' }],
  };
}
