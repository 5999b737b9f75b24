/** `log_format`: the real daemon logs JSON records or text lines, as configured. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { TestDaemon } from '../helpers/daemon.js';

async function daemonLog(format: 'json' | 'text' | undefined): Promise<string[]> {
  const d = new TestDaemon({ extraToml: format ? `log_format = "${format}"` : '' });
  try {
    await d.start();
    await d.rpc('PodSandboxStatus', { podSandboxId: 'nosuchpod' }).catch(() => {});
    await d.stopDaemon('SIGTERM');
    return (await fs.readFile(d.logFile, 'utf8')).split('\n').filter((l) => l !== '');
  } finally {
    await d.cleanup();
  }
}

test('log_format = "json" (and the default): every line is a pino JSON record', async () => {
  for (const format of ['json', undefined] as const) {
    const lines = await daemonLog(format);
    assert.ok(lines.length >= 2, `some log lines: ${lines.join('\n')}`);
    const records = lines.map((l) => JSON.parse(l));
    for (const r of records) {
      assert.equal(typeof r.level, 'number');
      assert.equal(typeof r.msg, 'string');
      assert.equal(r.svc, 'corral');
    }
    assert.ok(records.some((r) => /shutting down/.test(r.msg) && r.reason === 'SIGTERM'), lines.join('\n'));
  }
});

test('log_format = "text": every line is "time LEVEL msg key=value...", no JSON', async () => {
  const lines = await daemonLog('text');
  assert.ok(lines.length >= 2, `some log lines: ${lines.join('\n')}`);
  for (const l of lines) {
    assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /, l);
    assert.ok(!l.includes('{"level"'), l);
  }
  assert.ok(lines.some((l) => / INFO  shutting down: .* reason=SIGTERM/.test(l)), lines.join('\n'));
});
