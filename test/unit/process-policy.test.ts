import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { EXIT_UNCAUGHT_EXCEPTION, installProcessPolicy } from '../../src/cli/process-policy.js';

function captureLogger() {
  const lines: any[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

test('an unhandled rejection is logged with its stack and does not stop the daemon', () => {
  const proc = new EventEmitter();
  const { logger, lines } = captureLogger();
  let stops = 0;
  installProcessPolicy(proc as any, { logger, onUncaughtException: () => stops++ });
  proc.emit('unhandledRejection', new Error('background write failed'));
  proc.emit('unhandledRejection', 'a bare string');
  proc.emit('unhandledRejection', undefined);
  assert.equal(stops, 0);
  assert.equal(lines.length, 3);
  assert.equal(lines[0].level, 50); // error
  assert.equal(lines[0].err, 'background write failed');
  assert.match(lines[0].stack, /background write failed\n\s+at /);
  assert.match(lines[0].msg, /unhandled promise rejection.*keeps serving/);
  assert.equal(lines[1].err, 'a bare string');
  assert.equal(lines[2].err, 'undefined');
});

test('an uncaught exception is logged as fatal and starts one graceful shutdown', () => {
  const proc = new EventEmitter();
  const { logger, lines } = captureLogger();
  const stops: unknown[] = [];
  const uninstall = installProcessPolicy(proc as any, { logger, onUncaughtException: (e) => stops.push(e) });
  const boom = new TypeError('cannot read properties of undefined');
  proc.emit('uncaughtException', boom, 'uncaughtException');
  proc.emit('uncaughtException', new Error('second'), 'uncaughtException');
  assert.deepEqual(stops, [boom], 'the shutdown starts once');
  assert.equal(lines[0].level, 60); // fatal
  assert.match(lines[0].stack, /TypeError: cannot read properties of undefined/);
  assert.match(lines[0].msg, /shutting down gracefully/);
  assert.match(lines[1].msg, /during shutdown/);
  uninstall();
  assert.equal(proc.listenerCount('uncaughtException'), 0);
  assert.equal(proc.listenerCount('unhandledRejection'), 0);
});

/** Runs a real Node process that rejects a promise nobody handles, with or without the policy. */
function runRejectingProcess(withPolicy: boolean) {
  const policyModule = fileURLToPath(new URL('../../src/cli/process-policy.js', import.meta.url));
  const script = `
    const { installProcessPolicy } = await import(${JSON.stringify(policyModule)});
    if (${withPolicy}) installProcessPolicy(process, {
      logger: { error: (o, m) => console.error('logged:', m), fatal: (o, m) => console.error('fatal:', m) },
      onUncaughtException: () => process.exit(${EXIT_UNCAUGHT_EXCEPTION}),
    });
    Promise.reject(new Error('nobody awaits me'));
    setTimeout(() => { console.log('still serving'); }, 100);
  `;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
}

test('in a real process: without the policy an unhandled rejection kills Node; with it the process lives on', () => {
  const bare = runRejectingProcess(false);
  assert.notEqual(bare.status, 0, 'Node exits on an unhandled rejection by default');
  assert.doesNotMatch(bare.stdout, /still serving/);
  const guarded = runRejectingProcess(true);
  assert.equal(guarded.status, 0, guarded.stderr);
  assert.match(guarded.stdout, /still serving/);
  assert.match(guarded.stderr, /logged: unhandled promise rejection/);
});
