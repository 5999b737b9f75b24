import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { currentCapabilities, oomScoreAdjFloor, oomScoreAdjFloorFrom, OciRuntime, OciRuntimeError, parseRuntimeLog } from '../../src/oci/runtime.js';

const status = (capEff: string) => `Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t${capEff}\nCapBnd:\t${capEff}\n`;

test('oomScoreAdjFloorFrom: with CAP_SYS_RESOURCE anything goes, without it the own value is the floor', () => {
  assert.equal(oomScoreAdjFloorFrom(status('000001ffffffffff'), '0\n'), -1000);
  assert.equal(oomScoreAdjFloorFrom(status('0000000001000000'), '500\n'), -1000);
  assert.equal(oomScoreAdjFloorFrom(status('000001fffeffffff'), '0\n'), 0);
  assert.equal(oomScoreAdjFloorFrom(status('000001fffeffffff'), '-500\n'), -500);
  assert.equal(oomScoreAdjFloorFrom('Name:\tx\n', '200'), 200);
  assert.throws(() => oomScoreAdjFloorFrom(status('0'), 'garbage'), /oom_score_adj/);
});

test('oomScoreAdjFloor reads this process and agrees with /proc', async () => {
  const text = await fs.readFile('/proc/self/status', 'utf8');
  const own = Number((await fs.readFile('/proc/self/oom_score_adj', 'utf8')).trim());
  const capEff = BigInt('0x' + /^CapEff:\s*(\S+)/m.exec(text)![1]);
  const expected = (capEff >> 24n) & 1n ? -1000 : own;
  assert.equal(await oomScoreAdjFloor(), expected);
});

test('currentCapabilities names the bounding set', async () => {
  const caps = await currentCapabilities();
  const text = await fs.readFile('/proc/self/status', 'utf8');
  const bnd = BigInt('0x' + /^CapBnd:\s*(\S+)/m.exec(text)![1]);
  assert.equal(caps.includes('CAP_CHOWN'), Boolean(bnd & 1n));
  assert.equal(caps.includes('CAP_SYS_RESOURCE'), Boolean((bnd >> 24n) & 1n));
});

test('parseRuntimeLog prefers error messages from JSON lines, else plain text', () => {
  const json = [
    '{"level":"info","msg":"starting","time":"t"}',
    '{"level":"error","msg":"container does not exist","time":"t"}',
    '{"level":"error","msg":"container does not exist","time":"t"}',
  ].join('\n');
  assert.equal(parseRuntimeLog(json), 'container does not exist');
  assert.equal(parseRuntimeLog('crun: chdir failed\n'), 'crun: chdir failed');
  assert.equal(parseRuntimeLog('{"msg":"no level","time":"t"}'), 'no level');
  assert.equal(parseRuntimeLog(''), '');
});

test('OciRuntime: a missing binary is an OciRuntimeError; list on a missing root is empty', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-oci-unit-'));
  try {
    const rt = new OciRuntime({ name: 'nope', path: path.join(dir, 'no-such-runtime'), root: path.join(dir, 'root'), type: 'oci', cniConfDir: '', cniMaxNetworks: 0 });
    assert.deepEqual(await rt.list(), []);
    await assert.rejects(rt.start('x'), (e: Error) => e instanceof OciRuntimeError && /cannot run/.test(e.message));
    await assert.rejects(rt.create('x', path.join(dir, 'bundle')), (e: Error) => e instanceof OciRuntimeError && /config\.json/.test(e.message));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
