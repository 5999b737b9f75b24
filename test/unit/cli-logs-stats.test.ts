/** Pure parts of `corral logs` (the CRI log format, joining partial lines, --tail) and of `corral stats`/`statsp` (crictl's figures). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineSplitter, LogPrinter, TailFinder, formatLogTime, logTimeNs, parseCriRecord, parseSince, type LogRecord, type LogStream } from '../../src/cli/cri-log.js';
import { previousLogPath } from '../../src/cli/logs-command.js';
import { containerStatsRows, cpuPercent, podStatsRows } from '../../src/cli/stats-view.js';
import { ago, decimalSize } from '../../src/cli/format.js';
import { labelSelector, pickByName } from '../../src/cli/daemon-client.js';

const T = '2026-12-02T15:54:23.603252879+00:00';
const rec = (line: string) => parseCriRecord(Buffer.from(line))!;

test('CRI records: time, stream, P/F tag, the text as is (spaces kept); anything else is not a record', () => {
  const r = rec(`${T} stderr P  two  spaces `);
  assert.equal(r.time, T);
  assert.equal(r.stream, 'stderr');
  assert.equal(r.partial, true);
  assert.equal(r.text.toString(), ' two  spaces ');
  assert.equal(rec(`${T} stdout F`).text.length, 0, 'an empty line');
  assert.equal(rec(`${T} stdout F:x hello`).text.toString(), 'hello', 'a tag with more flags');
  for (const bad of ['plain text', `${T} stdin F x`, `${T} stdout X x`, `${T} stdout`, '', ' stdout F x']) assert.equal(parseCriRecord(Buffer.from(bad)), null, bad);
});

test('timestamps as crictl prints them: UTC with Z, always nine fractional digits', () => {
  assert.equal(formatLogTime(T), '2026-12-02T15:54:23.603252879Z');
  assert.equal(formatLogTime('2026-12-02T15:54:23.369943460+00:00'), '2026-12-02T15:54:23.369943460Z');
  assert.equal(formatLogTime('2026-12-02T15:54:23+00:00'), '2026-12-02T15:54:23.000000000Z');
  assert.equal(formatLogTime('2026-12-02T17:54:23.5+02:00'), '2026-12-02T15:54:23.500000000Z');
  assert.equal(formatLogTime('2026-12-31T23:30:00.25-01:00'), '2027-01-01T00:30:00.250000000Z');
  assert.equal(formatLogTime('garbage'), 'garbage');
});

test('--since: RFC 3339 times to the nanosecond, in any offset, or Go durations back from now; anything else refused', () => {
  assert.equal(logTimeNs('2026-12-02T15:54:23.603252879+00:00'), 1796226863603252879n);
  assert.equal(logTimeNs('2026-12-02T17:54:23.603252879+02:00'), 1796226863603252879n, 'the same instant in another offset');
  assert.equal(logTimeNs('2026-12-02T15:54:23Z'), 1796226863000000000n);
  assert.equal(logTimeNs('yesterday'), null);
  const now = Date.parse('2026-12-03T10:00:00Z');
  assert.equal(parseSince('2026-12-03T09:00:00Z', now), BigInt(now - 3_600_000) * 1_000_000n);
  assert.equal(parseSince('1h', now), BigInt(now - 3_600_000) * 1_000_000n);
  assert.equal(parseSince('1h30m', now), BigInt(now - 5_400_000) * 1_000_000n);
  assert.equal(parseSince('1.5s', now), BigInt(now - 1500) * 1_000_000n);
  assert.equal(parseSince('250ms', now), BigInt(now - 250) * 1_000_000n);
  for (const bad of ['', '5', '5 m', 'm5', '1d', '-5m', 'soon']) assert.throws(() => parseSince(bad, now), /--since must be an RFC 3339 time/, bad);
});

test('--since keeps the records written at or after it; --limit-bytes stops after that much output, timestamps counted', async () => {
  const at = (s: number) => `2026-12-02T15:54:${String(s).padStart(2, '0')}.000000000+00:00`;
  const records = [rec(`${at(1)} stdout F one`), rec(`${at(2)} stderr F two`), rec(`${at(3)} stdout P thr`), rec(`${at(4)} stdout F ee`)];
  const print = async (opts: { since?: bigint; limitBytes?: number }, timestamps = false) => {
    const got: Record<LogStream, string> = { stdout: '', stderr: '' };
    const p = new LogPrinter({ write: (s, d) => void (got[s] += d.toString()) }, timestamps, opts);
    for (const r of records) await p.print(r);
    return { got, full: p.full };
  };
  assert.deepEqual((await print({ since: logTimeNs(at(2))! })).got, { stdout: 'three\n', stderr: 'two\n' });
  assert.deepEqual((await print({ since: logTimeNs(at(5))! })).got, { stdout: '', stderr: '' });
  const limited = await print({ limitBytes: 6 });
  assert.deepEqual(limited.got, { stdout: 'one\n', stderr: 'tw' });
  assert.equal(limited.full, true);
  assert.equal((await print({ limitBytes: 1000 })).full, false);
  const stamped = await print({ limitBytes: 40 }, true);
  assert.equal(stamped.got.stdout, '2026-12-02T15:54:01.000000000Z one\n');
  assert.equal(stamped.got.stderr, '2026-', '40 bytes: the first line with its timestamp (35) and 5 of the next');
});

test('--previous: the log of attempt - 1 beside this one, as kubelet names them; none for a first instance', () => {
  assert.equal(previousLogPath('c1', '/var/log/pods/ns_p_uid/app/3.log', 3), '/var/log/pods/ns_p_uid/app/2.log');
  assert.equal(previousLogPath('c1', 'logs/app/1.log', 1), 'logs/app/0.log');
  assert.throws(() => previousLogPath('c1', '/var/log/pods/x/app/0.log', 0), /container c1 is its pod's first instance \(attempt 0\)/);
});

/** Prints records and returns what each stream got. */
async function printAll(records: LogRecord[], timestamps = false, skip: LogStream[] = []) {
  const got: Record<LogStream, string> = { stdout: '', stderr: '' };
  const p = new LogPrinter({ write: (s, d) => void (got[s] += d.toString()) }, timestamps);
  for (const s of skip) p.skipLineInProgress(s);
  for (const r of records) await p.print(r);
  return got;
}

test('partial records are joined into their line, per stream, even interleaved; one timestamp per line', async () => {
  const records = [`${T} stdout P aaa`, `${T} stderr F err`, `${T} stdout P bbb`, `${T} stdout F ccc`, `${T} stdout F next`].map(rec);
  assert.deepEqual(await printAll(records), { stdout: 'aaabbbccc\nnext\n', stderr: 'err\n' });
  const withTime = await printAll(records, true);
  assert.equal(withTime.stdout, '2026-12-02T15:54:23.603252879Z aaabbbccc\n2026-12-02T15:54:23.603252879Z next\n');
  // The rest of a line begun before the tail's start is skipped, the next line is whole.
  assert.deepEqual(await printAll([`${T} stdout P rest`, `${T} stdout F end`, `${T} stdout F whole`].map(rec), false, ['stdout']), { stdout: 'whole\n', stderr: '' });
});

test('--tail N starts at the Nth line from the end, counting a line of partial records once; streams mid-line there are marked', () => {
  const lines = [`${T} stdout P long1`, `${T} stdout P long2`, `${T} stderr P e1`, `${T} stdout F long3`, `${T} stdout F short`, `${T} stderr F e2`];
  const tail = (n: number) => {
    const f = new TailFinder(n);
    lines.forEach((l, i) => f.add(i * 100, rec(l)));
    return f.result();
  };
  assert.deepEqual(tail(1), { offset: 400, midLine: { stdout: false, stderr: true } }, 'the last line to start is "short"; stderr is mid-line');
  assert.deepEqual(tail(2), { offset: 200, midLine: { stdout: true, stderr: false } }, 'the stderr line e1e2 starts at 200, inside the long stdout line');
  assert.deepEqual(tail(3), { offset: 0, midLine: { stdout: false, stderr: false } });
  assert.deepEqual(tail(10), tail(3));
  assert.equal(tail(0), null);
});

test('lines split across chunks come out whole with their offsets; an endless "line" is cut at the cap', () => {
  const s = new LineSplitter(10);
  assert.deepEqual(s.push(Buffer.from('ab\ncd')).map((l) => [l.line.toString(), l.offset]), [['ab', 0]]);
  assert.deepEqual(s.push(Buffer.from('e\n\nf')).map((l) => [l.line.toString(), l.offset]), [['cde', 3], ['', 7]]);
  assert.equal(s.pending, 1);
  const cut = s.push(Buffer.from('0123456789x'));
  assert.deepEqual(cut.map((l) => [l.line.toString(), l.offset]), [['f0123456789x', 8]]);
  assert.equal(s.pending, 0);
});

test("sizes in crictl's units (go-units HumanSize), ages", () => {
  assert.deepEqual([0, 999, 1000, 4096, 20480, 12_345_678, 999_960, 1.5e9].map(decimalSize), ['0B', '999B', '1kB', '4.096kB', '20.48kB', '12.35MB', '1000kB', '1.5GB']);
  const now = 1_800_000_000_000;
  assert.equal(ago(String(BigInt(now - 5000) * 1_000_000n), now), '5 seconds ago');
  assert.equal(ago(String(BigInt(now - 3 * 86_400_000) * 1_000_000n), now), '3 days ago');
});

const cpu = (ns: number, tsNs: number, nanoCores?: number) => ({ timestamp: String(tsNs), usageCoreNanoSeconds: { value: String(ns) }, ...(nanoCores ? { usageNanoCores: { value: String(nanoCores) } } : {}) });

test('CPU % from two samples of the cumulative counter, as crictl; the daemon\'s rate when the samples share a timestamp', () => {
  assert.equal(cpuPercent(cpu(1e9, 1e9), cpu(1.5e9, 2e9)), '50.00');
  assert.equal(cpuPercent(cpu(1e9, 1e9), cpu(3e9, 2e9)), '200.00', 'two cores');
  assert.equal(cpuPercent(cpu(1e9, 2e9), cpu(1e9, 2e9, 250_000_000)), '25.00');
  assert.equal(cpuPercent(undefined, cpu(1e9, 2e9)), '-');
  assert.equal(cpuPercent(cpu(1e9, 1e9), undefined), '-');
});

const cstat = (id: string, name: string, c?: object, mem = 0) => ({
  attributes: { id, metadata: { name } },
  ...(c ? { cpu: c } : {}),
  memory: { workingSetBytes: { value: String(mem) } },
  writableLayer: { usedBytes: { value: '20480' }, inodesUsed: { value: '8' } },
});

test('stats rows: sorted by ID, not-running ones only with all, new ones (absent from the first sample) left out', () => {
  const first = [cstat('bbb', 'web', cpu(1e9, 1e9), 5e6), cstat('aaa', 'done')];
  const second = [cstat('bbb', 'web', cpu(2e9, 3e9), 5e6), cstat('aaa', 'done'), cstat('ccc', 'new', cpu(1, 1), 1)];
  assert.deepEqual(containerStatsRows(first, second, false), [['bbb', 'web', '50.00', '5MB', '20.48kB', '8']]);
  assert.deepEqual(containerStatsRows(first, second, true).map((r) => r[0]), ['aaa', 'bbb']);
});

test('statsp rows: CPU, working set and the bytes of every interface; pods without figures (not ready) left out', () => {
  const pod = (id: string, c: object | undefined, rx: number) => ({
    attributes: { id, metadata: { name: `pod-${id}` } },
    linux: { cpu: c, memory: { workingSetBytes: { value: c ? '2000000' : '0' } }, network: { interfaces: [{ name: 'eth0', rxBytes: { value: String(rx) }, txBytes: { value: '500' } }, { name: 'net1', rxBytes: { value: '1000' }, txBytes: { value: '0' } }] } },
  });
  const rows = podStatsRows([pod('p1', cpu(0.5e9, 1e9), 0), pod('p2', undefined, 0)], [pod('p1', cpu(1e9, 2e9), 3000), pod('p2', undefined, 0)]);
  assert.deepEqual(rows, [['pod-p1', 'p1', '50.00', '2MB', '4kB', '500B']]);
});

test('a name finds the newest of its attempts in one place; the same name in two places is an error naming both; labels are KEY=VALUE', () => {
  const c = (id: string, name: string, pod: string, created: number) => ({ id, podSandboxId: pod, metadata: { name }, createdAt: String(created) });
  const list = [c('a1', 'web', 'p1', 1), c('a2', 'web', 'p1', 2), c('b1', 'db', 'p1', 1), c('x1', 'api', 'p1', 1), c('x2', 'api', 'p2', 2)];
  assert.equal(pickByName(list, 'web', 'container', 'corral ps -a').id, 'a2');
  assert.throws(() => pickByName(list, 'api', 'container', 'corral ps -a'), /the name "api" is ambiguous: 2 containers have it: x1 \(pod p1\), x2 \(pod p2\); give the ID/);
  assert.throws(() => pickByName(list, 'nope', 'container', 'corral ps -a'), /no container has the ID, ID prefix or name "nope" \(see: corral ps -a\)/);
  assert.deepEqual(labelSelector(['a=1', 'b=x=y', 'c=']), { a: '1', b: 'x=y', c: '' });
  assert.equal(labelSelector([]), undefined);
  assert.throws(() => labelSelector(['novalue']), /--label must be KEY=VALUE, got "novalue"/);
});
