/** config/corral.service: the directives that keep pods alive across restarts and the daemon coming back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import { DEFAULT_CONFIG_PATH, defaultConfig } from '../../src/config/config.js';
import { EXIT_UNCAUGHT_EXCEPTION } from '../../src/cli/process-policy.js';

/** section → key → values (a key may repeat); comments and blank lines dropped. */
async function readUnit(): Promise<Map<string, Map<string, string[]>>> {
  const text = await readFile(path.join(packageRoot(), 'config', 'corral.service'), 'utf8');
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `a key=value line inside a section: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

test('corral.service: pods survive a restart, the daemon restarts on failure, limits as containerd', async () => {
  const unit = await readUnit();
  const service = unit.get('Service');
  assert.ok(service, '[Service] section');
  const one = (k: string) => {
    const v = service.get(k);
    assert.equal(v?.length, 1, `exactly one ${k}=`);
    return v[0]!;
  };
  assert.equal(one('KillMode'), 'process', 'only the daemon is killed: conmon and pause stay');
  assert.equal(one('Delegate'), 'yes');
  assert.equal(one('Restart'), 'on-failure');
  for (const k of ['LimitNPROC', 'LimitCORE', 'TasksMax']) assert.equal(one(k), 'infinity', k);
  assert.match(one('LimitNOFILE'), /^(\d+|infinity)$/);
  assert.ok(one('LimitNOFILE') === 'infinity' || Number(one('LimitNOFILE')) >= 65536, 'LimitNOFILE large enough for many pods');
  assert.equal(one('OOMScoreAdjust'), '-999');
  // The exit after an uncaught exception must be restarted; a refused configuration (2) must not loop.
  const prevented = (service.get('RestartPreventExitStatus') ?? []).join(' ').split(/\s+/);
  assert.ok(!prevented.includes(String(EXIT_UNCAUGHT_EXCEPTION)), `exit ${EXIT_UNCAUGHT_EXCEPTION} is restarted`);
  assert.ok(prevented.includes('2'), 'a refused configuration is not restarted in a loop');
  assert.equal(one('ExecStart'), `/usr/local/bin/corral serve --config ${DEFAULT_CONFIG_PATH}`);
  // The socket's directory is the runtime directory, and it survives a stop (live pods' runtime state is in it).
  assert.equal(`/run/${one('RuntimeDirectory')}`, path.dirname(defaultConfig().socket));
  assert.equal(one('RuntimeDirectoryPreserve'), 'yes');

  const after = (unit.get('Unit')?.get('After') ?? []).join(' ').split(/\s+/);
  assert.ok(after.includes('network-online.target'), 'After=network-online.target');
  assert.ok((unit.get('Unit')?.get('Wants') ?? []).join(' ').split(/\s+/).includes('network-online.target'), 'Wants=network-online.target (After alone does not pull it in)');
  assert.deepEqual(unit.get('Install')?.get('WantedBy'), ['multi-user.target']);
});
