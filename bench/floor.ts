/**
 * The floor: what a pod's network costs with no runtime at all. Per pod: `ip netns add`
 * and lo up (Corral's netns step also brings lo up), the bridge → portmap chain run by
 * hand the way libcni runs a conflist (CNI_COMMAND=ADD, stdin config with name,
 * cniVersion, runtimeConfig for the portMappings capability and the previous plugin's
 * result as prevResult), then DEL in reverse order with the final ADD result as
 * prevResult, then `ip netns del`. host-local is called by bridge, as in any runtime.
 * Like the daemons' rounds, all N setups run first (C in flight), then all N teardowns.
 */
import { promises as fs } from 'node:fs';
import { execFile, execChecked } from '../src/util/exec.js';
import { isAborted, machineCpu, onCleanup, pool, timed, errMessage } from './lib.js';
import { benchConflist } from './corral.js';

const CNI_BIN = '/usr/lib/cni';
const NETNS_DIR = '/var/run/netns';

export interface FloorResult {
  concurrency: number;
  n: number;
  setup: number[]; // netns add + lo up + ADD chain
  teardown: number[]; // DEL chain + netns del
  netns: number[];
  cniAdd: number[];
  cniDel: number[];
  total: number[];
  wall: number;
  /** The whole machine's busy and stolen CPU during the setup phase, ms per pod (machineCpu). */
  setupMachine: { busy: number; steal: number };
  errors: string[];
}

export class Floor {
  readonly networkName: string;
  readonly bridge: string;
  readonly conflist: any;
  private readonly live = new Set<string>();

  constructor(private readonly tag: string, subnet: string) {
    this.networkName = `corralbench-f-${tag}`;
    this.bridge = `cbf${tag}`;
    this.conflist = benchConflist(this.networkName, this.bridge, subnet);
    onCleanup('floor network', () => this.cleanup());
  }

  private async plugin(cmd: 'ADD' | 'DEL', plugin: any, prevResult: any, id: string, netns: string, pod: string): Promise<any> {
    const conf: any = { ...plugin, name: this.conflist.name, cniVersion: this.conflist.cniVersion };
    delete conf.capabilities;
    if (plugin.capabilities?.portMappings) conf.runtimeConfig = { portMappings: [] };
    if (prevResult) conf.prevResult = prevResult;
    const r = await execFile(`${CNI_BIN}/${plugin.type}`, [], {
      input: JSON.stringify(conf),
      env: {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        CNI_COMMAND: cmd,
        CNI_CONTAINERID: id,
        CNI_NETNS: netns,
        CNI_IFNAME: 'eth0',
        CNI_PATH: CNI_BIN,
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=podbench;K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=${id};K8S_POD_UID=${id}`,
      },
    });
    if (r.code !== 0) throw new Error(`${plugin.type} ${cmd}: ${(r.stdout || r.stderr).trim()}`);
    return cmd === 'ADD' ? JSON.parse(r.stdout) : undefined;
  }

  /**
   * N pods in two phases, as the daemons' rounds run them: every setup (at `concurrency`
   * in flight), then every teardown. (Setup and teardown of each pod in one go would put
   * setups beside teardowns, ~1 ADD chain at a time where a daemon's Run phase has
   * `concurrency` of them, and make the floor look faster than it is under load.)
   */
  async run(n: number, concurrency: number): Promise<FloorResult> {
    const res: FloorResult = { concurrency, n, setup: [], teardown: [], netns: [], cniAdd: [], cniDel: [], total: [], wall: 0, setupMachine: { busy: 0, steal: 0 }, errors: [] };
    const plugins: any[] = this.conflist.plugins;
    const pods = Array.from({ length: n }, (_, i) => {
      const name = `corralbench-floor-${this.tag}-${concurrency}-${i}`;
      return { name, id: `${this.tag}floor${concurrency}x${i}x`.padEnd(32, '0'), netns: `${NETNS_DIR}/${name}`, result: undefined as any, setupMs: 0, netnsMs: 0, addMs: 0, up: false };
    });
    const t0 = performance.now();
    const m0 = machineCpu();
    await pool(pods, concurrency, async (p) => {
      try {
        this.live.add(p.name);
        const a = await timed(async () => {
          await execChecked('ip', ['netns', 'add', p.name]);
          await execChecked('ip', ['-n', p.name, 'link', 'set', 'lo', 'up']);
        });
        const b = await timed(async () => {
          for (const plugin of plugins) p.result = await this.plugin('ADD', plugin, p.result, p.id, p.netns, p.name);
        });
        Object.assign(p, { netnsMs: a.ms, addMs: b.ms, up: true });
      } catch (e) {
        res.errors.push(errMessage(e)); // left in this.live: cleanup() releases it
      }
    });
    const m1 = machineCpu();
    res.setupMachine = { busy: (m1.busy - m0.busy) / n, steal: (m1.steal - m0.steal) / n };
    await pool(pods.filter((p) => p.up), concurrency, async (p) => {
      try {
        const c = await timed(async () => {
          for (const plugin of [...plugins].reverse()) await this.plugin('DEL', plugin, p.result, p.id, p.netns, p.name);
        });
        const d = await timed(() => execChecked('ip', ['netns', 'del', p.name]));
        this.live.delete(p.name);
        res.netns.push(p.netnsMs + d.ms);
        res.cniAdd.push(p.addMs);
        res.cniDel.push(c.ms);
        res.setup.push(p.netnsMs + p.addMs);
        res.teardown.push(c.ms + d.ms);
        res.total.push(p.netnsMs + p.addMs + c.ms + d.ms);
      } catch (e) {
        res.errors.push(errMessage(e));
      }
    });
    res.wall = performance.now() - t0;
    if (isAborted()) res.errors.push('aborted');
    return res;
  }

  async cleanup(): Promise<void> {
    const plugins: any[] = this.conflist.plugins;
    // Anything half-done (a failure or Ctrl-C): DEL with whatever is cached, then drop the netns.
    for (const name of [...this.live]) {
      const concurrencyAndIndex = name.slice(`corralbench-floor-${this.tag}-`.length).split('-');
      const id = `${this.tag}floor${concurrencyAndIndex[0]}x${concurrencyAndIndex[1]}x`.padEnd(32, '0');
      for (const p of [...plugins].reverse()) await this.plugin('DEL', p, undefined, id, `${NETNS_DIR}/${name}`, name).catch(() => {});
      await execFile('ip', ['netns', 'del', name]);
      this.live.delete(name);
    }
    await execFile('ip', ['link', 'del', this.bridge]);
    await fs.rm(`/var/lib/cni/networks/${this.networkName}`, { recursive: true, force: true });
  }
}
