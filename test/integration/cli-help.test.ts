/**
 * `corral --help` and `corral COMMAND --help` document every command and flag of the table
 * the parsers use (src/cli/commands.ts); errors a user meets first say what to do: a daemon
 * that is not running (no socket, nobody listening), a socket or directory that is root's.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { COMMANDS } from '../../src/cli/commands.js';

const mainJs = path.join(packageRoot(), 'dist/src/cli/main.js');
const corral = (...args: string[]) => execFile(process.execPath, [mainJs, ...args], { timeoutMs: 60_000 });
/** The same, as user nobody (the test runs as root). */
const corralAsNobody = (...args: string[]) =>
  execFile('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, mainJs, ...args], { timeoutMs: 60_000 });

let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cli-help-'));
  await fs.chmod(dir, 0o755);
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('corral --help lists every command with every flag, exits 0; no command is exit 2 with the same list', async () => {
  for (const args of [['--help'], ['-h'], ['help']]) {
    const r = await corral(...args);
    assert.equal(r.code, 0, r.stderr);
    for (const c of COMMANDS) {
      assert.match(r.stdout, new RegExp(`^  ${escape(c.name)} +${escape(c.summary)}$`, 'm'), `${args[0]}: ${c.name}`);
      for (const f of c.flags) assert.match(r.stdout, new RegExp(`--${escape(f.long)}\\b`), `${c.name} --${f.long}`);
    }
    assert.match(r.stdout, /systemctl start corral/);
  }
  const bare = await corral();
  assert.equal(bare.code, 2);
  assert.match(bare.stderr, /^usage: corral COMMAND/);
});

test('--help stays light: no gRPC, logger or daemon module is loaded', async () => {
  // A preload that reports every package the CommonJS loader loads (grpc-js and pino are CommonJS).
  const hook = path.join(dir, 'report-loads.cjs');
  await fs.writeFile(hook, `const M = require('module'); const seen = new Set(); const orig = M._load;
M._load = function (req, ...rest) { seen.add(req); return orig.call(this, req, ...rest); };
process.on('exit', () => process.stderr.write('LOADED ' + JSON.stringify([...seen]) + '\\n'));\n`);
  for (const args of [['--help'], ['serve', '--help'], ['pods', '--help']]) {
    const r = await execFile(process.execPath, ['--require', hook, mainJs, ...args]);
    assert.equal(r.code, 0, r.stderr);
    const loaded: string[] = JSON.parse(/LOADED (.*)/.exec(r.stderr)![1]!);
    assert.deepEqual(loaded.filter((m) => /grpc|pino|smol-toml/.test(m)), [], `${args.join(' ')} loaded ${loaded.join(', ')}`);
  }
  // The check can fail: a client command does load grpc-js.
  const client = await execFile(process.execPath, ['--require', hook, mainJs, 'version', '-r', `unix://${dir}/none.sock`]);
  assert.ok(JSON.parse(/LOADED (.*)/.exec(client.stderr)![1]!).some((m: string) => /grpc/.test(m)), client.stderr);
});

test('corral COMMAND --help explains each flag the command accepts', async () => {
  for (const c of COMMANDS) {
    const words = c.name.split(' ');
    const r = await corral(...words, '--help');
    assert.equal(r.code, 0, `${c.name} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^usage: corral ${escape(c.name)}\\b`), c.name);
    for (const f of [...c.flags, { long: 'help', short: 'h', help: 'show this help' }]) {
      const label = `${f.short ? `-${f.short}, ` : ''}--${f.long}`;
      assert.match(r.stdout, new RegExp(`^  +${escape(label)}\\b.*${escape(f.help)}$`, 'm'), `${c.name}: ${label}`);
    }
    assert.equal((await corral(...words, '-h')).stdout, r.stdout, `${c.name} -h`);
    assert.equal((await corral('help', ...words)).stdout, r.stdout, `help ${c.name}`);
  }
});

test('every documented flag is accepted by the command\'s parser', async () => {
  for (const c of COMMANDS) {
    for (const f of c.flags) {
      for (const spelling of [`--${f.long}`, ...(f.short ? [`-${f.short}`] : [])]) {
        // --help after the flag: parsed, then the help is shown instead of running the command.
        const r = await corral(...c.name.split(' '), spelling, ...(f.value ? ['x'] : []), '--help');
        assert.equal(r.code, 0, `${c.name} ${spelling}: ${r.stderr}`);
      }
    }
  }
});

test('an unknown flag or command is exit 2 and says where to look', async () => {
  const flag = await corral('pods', '--bogus');
  assert.equal(flag.code, 2);
  assert.match(flag.stderr, /corral pods: Unknown option '--bogus'/);
  assert.match(flag.stderr, /see: corral pods --help/);
  const serveFlag = await corral('serve', '--bogus');
  assert.equal(serveFlag.code, 2);
  assert.match(serveFlag.stderr, /see: corral serve --help/);
  const cmd = await corral('podz');
  assert.equal(cmd.code, 2);
  assert.match(cmd.stderr, /unknown command "podz"/);
  assert.match(cmd.stderr, /usage: corral COMMAND/);
  const sub = await corral('image', 'export');
  assert.equal(sub.code, 2);
  assert.match(sub.stderr, /unknown image subcommand "export".*corral image import FILE/);
});

test('daemon not running: no socket, or nobody listening, says how to start it (runtime and image commands)', async () => {
  const missing = path.join(dir, 'absent.sock');
  // A socket file that nobody listens on: bound, never listened, left behind.
  const dead = path.join(dir, 'dead.sock');
  const bound = await execFile('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(dead)})`]);
  assert.equal(bound.code, 0, bound.stderr);
  for (const [sock, why] of [[missing, 'there is no socket'], [dead, 'nothing listens on the socket']] as const) {
    for (const args of [['version'], ['pods'], ['images'], ['stopp', 'abc'], ['ps'], ['logs', 'abc'], ['stats'], ['statsp']]) {
      const r = await corral(...args, '-r', `unix://${sock}`);
      assert.equal(r.code, 1, `${args[0]}: ${r.stdout}`);
      assert.match(r.stderr, new RegExp(`the Corral daemon is not running at unix://${escape(sock)} \\(${why}\\)`), `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /systemctl start corral/);
      assert.match(r.stderr, /corral serve/);
      assert.match(r.stderr, /scripts\/start\.sh/);
    }
  }
  // The default endpoint comes from the environment too.
  const env = await execFile(process.execPath, [mainJs, 'version'], { env: { ...process.env, CONTAINER_RUNTIME_ENDPOINT: `unix://${missing}` } });
  assert.match(env.stderr, /daemon is not running at unix:\/\/.*absent\.sock/);
});

test('permission denied on the socket, or on the image store, says to run as root', async (t) => {
  const sock = path.join(dir, 'root-only.sock');
  const server = net.createServer((c) => c.destroy());
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await fs.chmod(sock, 0o660); // root:root, as the daemon's
  const r = await corralAsNobody('version', '-r', `unix://${sock}`);
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stderr, new RegExp(`permission denied on unix://${escape(sock)}: .*run as root`));

  const priv = path.join(dir, 'private');
  await fs.mkdir(priv, { mode: 0o700 });
  const config = path.join(dir, 'import.toml');
  await fs.writeFile(config, `root_dir = "${priv}/root"\n`, { mode: 0o644 });
  const archive = path.join(dir, 'archive.tar');
  await fs.writeFile(archive, 'not an archive', { mode: 0o644 });
  const imp = await corralAsNobody('image', 'import', '--config', config, archive);
  assert.equal(imp.code, 1, imp.stdout);
  assert.match(imp.stderr, /EACCES.*: run as root/);
});
