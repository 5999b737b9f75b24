/** `corral ps`, `corral stats` and `corral statsp`: crictl's container listing and usage tables. */
import { parseArgs } from 'node:util';
import { parseOptions } from './commands.js';
import { ago, table } from './format.js';
import { connectRuntime, labelSelector, resolveContainer, resolvePod, type Rpc } from './daemon-client.js';
import { CONTAINER_STATS_HEAD, POD_STATS_HEAD, containerStatsRows, podStatsRows } from './stats-view.js';

const STATES: Record<string, string> = { created: 'CONTAINER_CREATED', running: 'CONTAINER_RUNNING', exited: 'CONTAINER_EXITED', unknown: 'CONTAINER_UNKNOWN' };
const STATE_WORD: Record<string, string> = { CONTAINER_CREATED: 'Created', CONTAINER_RUNNING: 'Running', CONTAINER_EXITED: 'Exited', CONTAINER_UNKNOWN: 'Unknown' };

export async function containerCommand(command: 'ps' | 'stats' | 'statsp', argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions(command), allowPositionals: true });
  const output = values.output as string | undefined;
  if (output !== undefined && output !== 'json' && output !== 'table') throw new Error(`--output must be json or table, got "${output}"`);
  const seconds = values.seconds === undefined ? 1 : Number(values.seconds);
  if (!(seconds > 0 && seconds <= 3600)) throw new Error(`--seconds must be a number of seconds in (0, 3600], got "${values.seconds}"`);
  // Checked before the daemon is asked anything.
  const labels = labelSelector(values.label as string[] | undefined);
  const nameRe = values.name === undefined ? undefined : toRegExp(values.name as string);
  const daemon = await connectRuntime(values);
  try {
    switch (command) {
      case 'ps':
        return await ps(daemon.rpc, values, labels, nameRe);
      case 'stats':
        return await stats(daemon.rpc, values, positionals, labels, seconds * 1000);
      case 'statsp':
        return await statsp(daemon.rpc, values, positionals, labels, seconds * 1000);
    }
  } finally {
    daemon.close();
  }
}

function toRegExp(pattern: string): RegExp {
  try {
    return new RegExp(pattern);
  } catch (e) {
    throw new Error(`--name: not a regular expression: ${(e as Error).message}`);
  }
}

function print(s: string): void {
  process.stdout.write(s + '\n');
}

async function ps(rpc: Rpc, values: Record<string, unknown>, labels: Record<string, string> | undefined, nameRe: RegExp | undefined): Promise<number> {
  let last: number | undefined = values.latest ? 1 : undefined;
  if (values.last !== undefined) {
    last = Number(values.last);
    if (!Number.isInteger(last) || last < 0) throw new Error(`--last must be a whole number of containers, got "${values.last}"`);
  }
  const filter: any = {};
  if (values.id) filter.id = values.id;
  if (values.pod) filter.podSandboxId = await resolvePod(rpc, values.pod as string);
  if (values.state !== undefined) {
    const state = STATES[(values.state as string).toLowerCase()];
    if (!state) throw new Error(`--state must be one of ${Object.keys(STATES).join(', ')}, got "${values.state}"`);
    filter.state = { state };
  } else if (!values.all && last === undefined) {
    // As crictl: --latest and --last look at containers in every state.
    filter.state = { state: 'CONTAINER_RUNNING' };
  }
  if (labels) filter.labelSelector = labels;
  const [{ containers }, { items: pods }] = await Promise.all([rpc('ListContainers', { filter }), rpc('ListPodSandbox', {})]);
  const list = (containers as any[])
    .filter((c) => !nameRe || nameRe.test(c.metadata.name))
    .sort((a, b) => (BigInt(b.createdAt) > BigInt(a.createdAt) ? 1 : BigInt(b.createdAt) < BigInt(a.createdAt) ? -1 : 0))
    .slice(0, last === undefined || last === 0 ? undefined : last);
  if (values.quiet) {
    for (const c of list) print(c.id);
  } else if (values.output === 'json') {
    print(JSON.stringify({ containers: list }, null, 2));
  } else {
    const podName = new Map((pods as any[]).map((p) => [p.id, p.metadata.name as string]));
    const id = (s: string) => (values['no-trunc'] ? s : s.slice(0, 13));
    const rows = list.map((c) => [
      id(c.id),
      shortImage(c.image?.image || c.imageRef || ''),
      ago(c.createdAt),
      STATE_WORD[c.state] ?? c.state,
      c.metadata.name,
      String(c.metadata.attempt ?? 0),
      id(c.podSandboxId),
      podName.get(c.podSandboxId) ?? c.labels?.['io.kubernetes.pod.name'] ?? 'unknown',
    ]);
    print(table(['CONTAINER', 'IMAGE', 'CREATED', 'STATE', 'NAME', 'ATTEMPT', 'POD ID', 'POD'], rows));
  }
  return 0;
}

/** An image ID is shown as crictl shows it (13 hex digits); a reference as is. */
function shortImage(image: string): string {
  const m = /^(?:sha256:)?([0-9a-f]{64})$/.exec(image);
  return m ? m[1]!.slice(0, 13) : image;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function stats(rpc: Rpc, values: Record<string, unknown>, refs: string[], labels: Record<string, string> | undefined, sampleMs: number): Promise<number> {
  const ids = await Promise.all(refs.map(async (r) => (await resolveContainer(rpc, r)).id));
  const filter: any = {};
  if (ids.length === 1) filter.id = ids[0];
  if (values.pod) filter.podSandboxId = await resolvePod(rpc, values.pod as string);
  if (labels) filter.labelSelector = labels;
  const wanted = (list: any[]) => (ids.length > 1 ? list.filter((s) => ids.includes(s.attributes.id)) : list);
  const sample = async () => wanted((await rpc('ListContainerStats', { filter })).stats);
  const first = await sample();
  if (values.output === 'json') {
    print(JSON.stringify({ stats: first.sort(byId) }, null, 2));
    return 0;
  }
  await sleep(sampleMs);
  // Containers named on the command line are shown whatever their state, as with -a.
  print(table(CONTAINER_STATS_HEAD, containerStatsRows(first, await sample(), values.all === true || ids.length > 0)));
  return 0;
}

async function statsp(rpc: Rpc, values: Record<string, unknown>, refs: string[], labels: Record<string, string> | undefined, sampleMs: number): Promise<number> {
  const ids = await Promise.all(refs.map((r) => resolvePod(rpc, r)));
  const filter: any = {};
  if (ids.length === 1) filter.id = ids[0];
  if (labels) filter.labelSelector = labels;
  const wanted = (list: any[]) => (ids.length > 1 ? list.filter((s) => ids.includes(s.attributes.id)) : list);
  const sample = async () => wanted((await rpc('ListPodSandboxStats', { filter })).stats);
  const first = await sample();
  if (values.output === 'json') {
    print(JSON.stringify({ stats: first.sort(byId) }, null, 2));
    return 0;
  }
  await sleep(sampleMs);
  print(table(POD_STATS_HEAD, podStatsRows(first, await sample())));
  return 0;
}

const byId = (a: any, b: any) => (a.attributes.id < b.attributes.id ? -1 : a.attributes.id > b.attributes.id ? 1 : 0);
