import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, defaultConfig, loadConfig, parseListenAddress, resolveConfig } from '../../src/config/config.js';

test('an empty document gives the documented defaults', () => {
  const cfg = resolveConfig({});
  assert.equal(cfg.rootDir, '/var/lib/corral');
  assert.equal(cfg.stateDir, '/run/corral');
  assert.equal(cfg.socket, '/run/corral/corral.sock');
  assert.equal(cfg.netnsDir, '/var/run/netns');
  assert.equal(cfg.cni.confDir, '/etc/cni/net.d');
  assert.deepEqual(cfg.cni.binDirs, ['/opt/cni/bin', '/usr/lib/cni']);
  assert.equal(cfg.cni.maxNetworks, 1);
  assert.equal(cfg.cni.reloadIntervalMs, 1000);
  assert.equal(cfg.cni.loopbackPlugin, false);
  assert.equal(cfg.cgroupDriver, 'cgroupfs');
  assert.deepEqual(Object.keys(cfg.runtimes).sort(), ['crun', 'runc']);
  assert.equal(cfg.runtimes.runc!.root, '/run/corral/runc');
  assert.deepEqual(cfg, defaultConfig());
});

test('state_dir moves the socket and runtime roots with it unless they are set', () => {
  const cfg = resolveConfig({ state_dir: '/tmp/x' });
  assert.equal(cfg.socket, '/tmp/x/corral.sock');
  assert.equal(cfg.runtimes.crun!.root, '/tmp/x/crun');
});

test('command-line overrides win over the file', () => {
  const cfg = resolveConfig({ socket: '/a.sock', root_dir: '/r' }, { socket: '/b.sock', rootDir: '/q', logLevel: 'debug' });
  assert.equal(cfg.socket, '/b.sock');
  assert.equal(cfg.rootDir, '/q');
  assert.equal(cfg.logLevel, 'debug');
});

test('runtime handlers are read with their type and own CNI conf dir', () => {
  const cfg = resolveConfig({
    default_runtime: 'kata',
    runtimes: { kata: { path: '/usr/local/bin/kata-runtime', type: 'vm', cni_conf_dir: '/etc/cni/kata.d', cni_max_networks: 2 } },
  });
  assert.deepEqual(Object.keys(cfg.runtimes), ['kata']);
  assert.equal(cfg.runtimes.kata!.type, 'vm');
  assert.equal(cfg.runtimes.kata!.cniConfDir, '/etc/cni/kata.d');
  assert.equal(cfg.runtimes.kata!.root, '/run/corral/kata');
});

test('unknown keys and bad values are refused with the key and the reason', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ bogus: 1 }, /bogus: unknown key/],
    [{ cni: { conf: '/x' } }, /cni\.conf: unknown key/],
    [{ root_dir: 'relative' }, /root_dir: must be an absolute path/],
    [{ cgroup_driver: 'systemd' }, /cgroup_driver: must be one of "cgroupfs"/],
    [{ cni: { max_networks: -1 } }, /cni\.max_networks: must be between 0 and 64/],
    [{ cni: { bin_dirs: [] } }, /cni\.bin_dirs: must be a non-empty list/],
    [{ cni: { reload_interval_ms: -1 } }, /cni\.reload_interval_ms: must be between 0 and 3600000/],
    [{ cni: { reload_interval_ms: 1.5 } }, /cni\.reload_interval_ms: must be/],
    [{ cni: { loopback_plugin: 'yes' } }, /cni\.loopback_plugin: must be true or false/],
    [{ log_level: 3 }, /log_level: must be one of/],
    [{ log_format: 'pretty' }, /log_format: must be one of "json", "text"/],
    [{ default_runtime: 'nope' }, /default_runtime: "nope" is not a configured runtime/],
    [{ runtimes: { x: { path: 'bin/x' } } }, /runtimes\.x\.path: must be a bare program name or an absolute path/],
    [{ runtimes: { x: { type: 'kvm' } } }, /runtimes\.x\.type: must be one of "oci", "vm"/],
    [{ runtimes: { x: { colour: 'red' } }, default_runtime: 'x' }, /runtimes\.x\.colour: unknown key/],
    [{ drop_infra_container: 'yes' }, /drop_infra_container: must be true or false/],
  ];
  for (const [raw, re] of cases) {
    assert.throws(() => resolveConfig(raw), (e: unknown) => e instanceof ConfigError && re.test((e as Error).message), JSON.stringify(raw));
  }
});

test('log_format is json unless the file says text', () => {
  assert.equal(resolveConfig({}).logFormat, 'json');
  assert.equal(resolveConfig({ log_format: 'text' }).logFormat, 'text');
});

test('restrict_oom_score_adj accepts booleans and "auto"', () => {
  assert.equal(resolveConfig({ restrict_oom_score_adj: true }).restrictOomScoreAdj, 'true');
  assert.equal(resolveConfig({ restrict_oom_score_adj: 'auto' }).restrictOomScoreAdj, 'auto');
});

test('loadConfig: absent default file means defaults, absent named file is an error, bad TOML names the file', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corral-cfg-'));
  try {
    await assert.rejects(loadConfig(path.join(dir, 'missing.toml')), /cannot read config file/);
    const bad = path.join(dir, 'bad.toml');
    await writeFile(bad, 'root_dir = \n');
    await assert.rejects(loadConfig(bad), (e: Error) => e.message.startsWith(bad) && /not valid TOML/.test(e.message));
    const good = path.join(dir, 'good.toml');
    await writeFile(good, 'netns_dir = "/run/netns"\n[cni]\nmax_networks = 2\n');
    const cfg = await loadConfig(good);
    assert.equal(cfg.netnsDir, '/run/netns');
    assert.equal(cfg.cni.maxNetworks, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('config/config.example.toml, the documented reference, is exactly the defaults', async () => {
  const { readFile } = await import('node:fs/promises');
  const { parse } = await import('smol-toml');
  const { packageRoot } = await import('../../src/util/paths.js');
  const text = await readFile(path.join(packageRoot(), 'config', 'config.example.toml'), 'utf8');
  assert.deepEqual(resolveConfig(parse(text) as Record<string, unknown>), defaultConfig());
});

test('config/config.example.toml: the commented gVisor handlers, uncommented, give runsc and untrusted vm handlers beside runc and crun', async () => {
  const { readFile } = await import('node:fs/promises');
  const { parse } = await import('smol-toml');
  const { packageRoot } = await import('../../src/util/paths.js');
  const text = await readFile(path.join(packageRoot(), 'config', 'config.example.toml'), 'utf8');
  const uncommented = text.replace(/^#(\[runtimes\.(runsc|untrusted)\]|path = "runsc"|type = "vm".*)$/gm, '$1');
  assert.notEqual(uncommented, text, 'the example has a commented gVisor block');
  const cfg = resolveConfig(parse(uncommented) as Record<string, unknown>);
  assert.deepEqual(Object.keys(cfg.runtimes).sort(), ['crun', 'runc', 'runsc', 'untrusted']);
  for (const name of ['runsc', 'untrusted']) {
    assert.equal(cfg.runtimes[name]!.path, 'runsc');
    assert.equal(cfg.runtimes[name]!.type, 'vm');
  }
});

test('registries: mirrors, insecure, TLS and CA settings per host; bad ones refused', () => {
  const cfg = resolveConfig({
    registries: {
      'registry.k8s.io': { mirrors: ['http://127.0.0.1:5000'] },
      'myreg.example:5443': { insecure: true, tls_verify: false, ca_file: '/etc/corral/ca.pem' },
    },
  });
  assert.deepEqual(cfg.registries['registry.k8s.io'], { mirrors: ['http://127.0.0.1:5000'], insecure: false, tlsVerify: true, caFile: '' });
  assert.deepEqual(cfg.registries['myreg.example:5443'], { mirrors: [], insecure: true, tlsVerify: false, caFile: '/etc/corral/ca.pem' });
  assert.throws(() => resolveConfig({ registries: { 'a.io': { mirrors: ['ftp://x'] } } }), /registries\."a\.io"\.mirrors: entry 0 must be an http/);
  assert.throws(() => resolveConfig({ registries: { 'a.io': { mirror: [] } } }), /registries\.a\.io\.mirror: unknown key/);
  assert.throws(() => resolveConfig({ registries: { 'a.io': { ca_file: 'ca.pem' } } }), /ca_file: must be an absolute path/);
  assert.throws(() => resolveConfig({ registries: { 'http://a.io': {} } }), /not a registry host/);
});

test('streaming: containerd-like defaults (loopback, ephemeral port, no TLS, 4 h idle); bad values refused', () => {
  assert.deepEqual(defaultConfig().streaming, { address: '127.0.0.1', port: 0, tlsCertFile: '', tlsKeyFile: '', idleTimeoutSeconds: 14400 });
  const cfg = resolveConfig({ streaming: { address: '::1', port: 10010, tls_cert_file: '/etc/corral/s.crt', tls_key_file: '/etc/corral/s.key', idle_timeout_seconds: 60 } });
  assert.deepEqual(cfg.streaming, { address: '::1', port: 10010, tlsCertFile: '/etc/corral/s.crt', tlsKeyFile: '/etc/corral/s.key', idleTimeoutSeconds: 60 });
  assert.throws(() => resolveConfig({ streaming: { address: 'localhost' } }), /streaming\.address: must be an IP address/);
  assert.throws(() => resolveConfig({ streaming: { port: 70000 } }), /streaming\.port: must be between 0 and 65535/);
  assert.throws(() => resolveConfig({ streaming: { tls_cert_file: '/a.crt' } }), /tls_cert_file and tls_key_file must be set together/);
  assert.throws(() => resolveConfig({ streaming: { tls_cert_file: 'a.crt', tls_key_file: '/a.key' } }), /tls_cert_file: must be an absolute path/);
  assert.throws(() => resolveConfig({ streaming: { stream_port: 1 } }), /streaming\.stream_port: unknown key/);
});

test('container_log_size_max: -1 (default) and 0 mean no cap; a cap below conmon\'s 8 KiB read buffer is refused', () => {
  assert.equal(resolveConfig({}).containerLogSizeMax, -1);
  assert.equal(resolveConfig({ container_log_size_max: 0 }).containerLogSizeMax, 0);
  assert.equal(resolveConfig({ container_log_size_max: 10 * 1024 * 1024 }).containerLogSizeMax, 10 * 1024 * 1024);
  assert.equal(resolveConfig({ container_log_size_max: 8192 }).containerLogSizeMax, 8192);
  assert.throws(() => resolveConfig({ container_log_size_max: 8191 }), /container_log_size_max: must be -1 or 0 \(no cap\) or at least 8192 bytes/);
  assert.throws(() => resolveConfig({ container_log_size_max: -2 }), /container_log_size_max: must be between -1 and/);
  assert.throws(() => resolveConfig({ container_log_size_max: '10M' }), /container_log_size_max: must be a whole number/);
});

test('config/config.example.toml names every top-level setting (not only those that differ from nothing)', async () => {
  const { readFile } = await import('node:fs/promises');
  const { parse } = await import('smol-toml');
  const { packageRoot } = await import('../../src/util/paths.js');
  const example = parse(await readFile(path.join(packageRoot(), 'config', 'config.example.toml'), 'utf8')) as Record<string, unknown>;
  const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  const scalars = Object.entries(defaultConfig()).filter(([, v]) => typeof v !== 'object').map(([k]) => snake(k));
  assert.deepEqual(scalars.filter((k) => !(k in example)), [], 'settings missing from config.example.toml');
});

test('metrics_address: off by default; IP:PORT or [IPv6]:PORT, anything else refused with the reason', () => {
  assert.equal(defaultConfig().metricsAddress, '');
  assert.equal(resolveConfig({ metrics_address: '127.0.0.1:9090' }).metricsAddress, '127.0.0.1:9090');
  assert.equal(resolveConfig({ metrics_address: '[::1]:0' }).metricsAddress, '[::1]:0');
  assert.deepEqual(parseListenAddress('0.0.0.0:9090'), { host: '0.0.0.0', port: 9090 });
  assert.deepEqual(parseListenAddress('[::]:1234'), { host: '::', port: 1234 });
  const refused: [unknown, RegExp][] = [
    ['9090', /must be IP:PORT or \[IPv6\]:PORT, got "9090"/],
    [':9090', /must be IP:PORT/],
    ['localhost:9090', /"localhost" is not an IPv4 address \(names are not resolved\)/],
    ['::1:9090', /must be IP:PORT/],
    ['[127.0.0.1]:9090', /"127\.0\.0\.1" is not an IPv6 address/],
    ['127.0.0.1:65536', /port 65536 is out of range/],
    ['127.0.0.1:90a', /must be IP:PORT/],
    ['http://127.0.0.1:9090', /must be IP:PORT/],
    [9090, /metrics_address: must be a string/],
  ];
  for (const [value, re] of refused) {
    assert.throws(() => resolveConfig({ metrics_address: value }), (e: unknown) => e instanceof ConfigError && /metrics_address: /.test((e as Error).message) && re.test((e as Error).message), String(value));
  }
});
