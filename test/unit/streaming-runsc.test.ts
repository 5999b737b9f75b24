/**
 * The pure parts of ending a gVisor streaming exec: reading `runsc ps`'s table and finding
 * an exec's process tree in it (src/streaming/backend/runsc-exec.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunscPs, processTree } from '../../src/streaming/backend/runsc-exec.js';

const TABLE = [
  'UID       PID       PPID      C         TTY       STIME     TIME      CMD',
  '1000      1         0         0         ?         17:20     0s        httpd',
  '1000      7         0         0         ?         17:21     0s        sh',
  '1000      8         7         0         ?         17:21     0s        sleep',
  '1000      9         7         0         ?         17:21     0s        sleep',
  '1000      10        9         0         pts/0     17:21     0s        my cmd',
  '',
].join('\n');

test('parseRunscPs reads PID, PPID and the command from the table, by its header', () => {
  assert.deepEqual(parseRunscPs(TABLE), [
    { pid: 1, ppid: 0, cmd: 'httpd' },
    { pid: 7, ppid: 0, cmd: 'sh' },
    { pid: 8, ppid: 7, cmd: 'sleep' },
    { pid: 9, ppid: 7, cmd: 'sleep' },
    { pid: 10, ppid: 9, cmd: 'my cmd' },
  ]);
  // Without the TTY column (older runsc), by the header too.
  assert.deepEqual(parseRunscPs('UID PID PPID C STIME TIME CMD\n0 3 1 0 10:00 0s cat\n'), [{ pid: 3, ppid: 1, cmd: 'cat' }]);
});

test('parseRunscPs: not a process table (the json format lists PIDs only) is null; a header alone is no process', () => {
  assert.equal(parseRunscPs('[2,3,4,5]\n'), null);
  assert.equal(parseRunscPs(''), null);
  assert.deepEqual(parseRunscPs('UID PID PPID C STIME TIME CMD\n'), []);
});

test('processTree: the exec and its descendants, parents first; nothing of the container besides; [] when gone', () => {
  const procs = parseRunscPs(TABLE)!;
  assert.deepEqual(processTree(procs, 7), [7, 8, 9, 10]);
  assert.deepEqual(processTree(procs, 9), [9, 10]);
  assert.deepEqual(processTree(procs, 42), []);
  // A PPID cycle (a misread table) does not loop.
  assert.deepEqual(processTree([{ pid: 2, ppid: 3 }, { pid: 3, ppid: 2 }], 2), [2, 3]);
});
