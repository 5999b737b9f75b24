/** The pure parts of `corral exec/attach/port-forward`: where exec's own command starts, port mappings, exit status. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { commandArgs } from '../../src/cli/commands.js';
import { outcomeOf, parsePortMapping } from '../../src/cli/stream-commands.js';

test('exec: everything after the container ID is the command, flags included; flags before it are corral\'s', () => {
  assert.deepEqual(commandArgs('exec', ['-it', 'c1', 'ls', '-l']), ['-it', 'c1', '--', 'ls', '-l']);
  assert.deepEqual(commandArgs('exec', ['--timeout', '5s', '-r', '/s', 'c1', 'sh', '-c', 'x']), ['--timeout', '5s', '-r', '/s', 'c1', '--', 'sh', '-c', 'x']);
  assert.deepEqual(commandArgs('exec', ['-ir/s', 'c1', 'true']), ['-ir/s', 'c1', '--', 'true']);
  assert.deepEqual(commandArgs('exec', ['--timeout=5s', 'c1', '-x']), ['--timeout=5s', 'c1', '--', '-x']);
  assert.deepEqual(commandArgs('exec', ['-i', '--', 'c1', 'true']), ['-i', '--', 'c1', 'true'], 'an explicit -- is left alone');
  assert.deepEqual(commandArgs('exec', ['-i', '--help']), ['-i', '--help']);
  assert.deepEqual(commandArgs('pods', ['-q', 'x', '-s', 'ready']), ['-q', 'x', '-s', 'ready'], 'other commands are untouched');
});

test('port-forward mappings: LOCAL:REMOTE, REMOTE, :REMOTE; bad ones say how to write them', () => {
  assert.deepEqual(parsePortMapping('8080:80'), { local: 8080, remote: 80 });
  assert.deepEqual(parsePortMapping('80'), { local: 80, remote: 80 });
  assert.deepEqual(parsePortMapping(':80'), { local: 0, remote: 80 });
  assert.deepEqual(parsePortMapping('0:80'), { local: 0, remote: 80 });
  for (const bad of ['x:80', '80:0', '0', '70000', '1:70000', '-1:80', '', '1:2:3']) {
    assert.throws(() => parsePortMapping(bad), /bad port mapping/, bad);
  }
});

test('exit status from the error channel: success, the exit code, a failure message, nothing at all', () => {
  assert.deepEqual(outcomeOf('{"metadata":{},"status":"Success"}'), { code: 0 });
  const nonZero = { metadata: {}, status: 'Failure', message: 'command terminated with non-zero exit code: exit status 137', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '137' }] } };
  assert.deepEqual(outcomeOf(JSON.stringify(nonZero)), { code: 137 });
  const failed = { metadata: {}, status: 'Failure', message: 'Internal error occurred: error executing command in container: no such file', reason: 'InternalError', code: 500 };
  assert.deepEqual(outcomeOf(JSON.stringify(failed)), { code: 1, message: failed.message });
  assert.equal(outcomeOf('').code, 1);
  assert.match(outcomeOf('').message!, /without an exit status/);
  assert.deepEqual(outcomeOf('plain text error\n'), { code: 1, message: 'plain text error' });
});
