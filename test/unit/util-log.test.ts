import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger, formatTextLine } from '../../src/util/log.js';

test('text format: time, level name, message, then key=value fields on one line', () => {
  const line = formatTextLine(JSON.stringify({
    level: 40, time: '2026-01-02T03:04:05.678Z', svc: 'corral', msg: 'pod network slow',
    sandbox: 'abc123', attempt: 2, ok: false, note: 'two words', nested: { a: 1 },
  }));
  assert.equal(line, '2026-01-02T03:04:05.678Z WARN  pod network slow sandbox=abc123 attempt=2 ok=false note="two words" nested={"a":1}');
});

test('text format: a multi-line value (a stack) stays on one line, escaped', () => {
  const line = formatTextLine(JSON.stringify({ level: 50, time: 't', msg: 'failed\nbadly', err: 'Error: x\n    at y' }));
  assert.equal(line, 't ERROR failed\\nbadly err="Error: x\\n    at y"');
  assert.ok(!line.includes('\n'));
});

test('text format: a line that is not JSON passes through', () => {
  assert.equal(formatTextLine('plain words\n'), 'plain words');
});

test('createLogger writes JSON records or text lines to the given fd', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corral-log-'));
  try {
    for (const format of ['json', 'text'] as const) {
      const file = path.join(dir, format);
      const fd = openSync(file, 'w');
      createLogger('debug', fd, format).info({ podId: 'p1' }, 'hello there');
      closeSync(fd);
      const out = (await readFile(file, 'utf8')).trim();
      if (format === 'json') {
        const rec = JSON.parse(out);
        assert.equal(rec.msg, 'hello there');
        assert.equal(rec.podId, 'p1');
        assert.equal(rec.level, 30);
      } else {
        assert.match(out, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  hello there podId=p1$/);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
