/** crictl-style client subcommands over the CRI socket. */
import { promises as fs } from 'node:fs';
import { parseArgs } from 'node:util';
import { ago, table } from './format.js';
import { toCamelCaseFields } from './json-input.js';
import { DEFAULT_ENDPOINT, parseOptions } from './commands.js';
import { explainCallError } from './hints.js';
import type { RuntimeRpcName } from '../cri/proto.js';

export async function clientCommand(command: string, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: parseOptions(command), allowPositionals: true });
  const endpoint = (values['runtime-endpoint'] as string | undefined) ?? process.env.CONTAINER_RUNTIME_ENDPOINT ?? DEFAULT_ENDPOINT;
  const timeoutMs = parseDuration((values.timeout as string | undefined) ?? '2m');
  const { createRuntimeClient, call } = await import('../cri/client.js');
  const client = createRuntimeClient(endpoint);
  const rpc = (method: RuntimeRpcName, req: object) =>
    call(client, method, req, { deadlineMs: timeoutMs }).catch((e: unknown) => {
      throw explainCallError(e, endpoint);
    });
  try {
    switch (command) {
      case 'version': {
        const v = await rpc('Version', { version: 'v1' });
        print(`Version:  ${v.version}\nRuntimeName:  ${v.runtimeName}\nRuntimeVersion:  ${v.runtimeVersion}\nRuntimeApiVersion:  ${v.runtimeApiVersion}`);
        return 0;
      }
      case 'info': {
        const s = await rpc('Status', { verbose: true });
        const info = Object.fromEntries(Object.entries(s.info ?? {}).map(([k, v]) => [k, tryJson(v as string)]));
        print(JSON.stringify({ status: s.status, runtimeHandlers: s.runtimeHandlers, info }, null, 2));
        return 0;
      }
      case 'runp': {
        const file = positionals[0];
        if (!file) throw new Error('runp needs a pod sandbox config file (JSON)');
        const config = toCamelCaseFields(JSON.parse(await fs.readFile(file, 'utf8')));
        const r = await rpc('RunPodSandbox', { config, runtimeHandler: (values.runtime as string | undefined) ?? '' });
        print(r.podSandboxId);
        return 0;
      }
      case 'stopp':
      case 'rmp': {
        let ids = positionals;
        if (command === 'rmp' && values.all) ids = (await rpc('ListPodSandbox', {})).items.map((i: any) => i.id);
        if (ids.length === 0) throw new Error(`${command} needs at least one pod sandbox ID`);
        let failed = 0;
        for (const id of ids) {
          try {
            if (command === 'rmp' && values.force) await rpc('StopPodSandbox', { podSandboxId: id });
            await rpc(command === 'stopp' ? 'StopPodSandbox' : 'RemovePodSandbox', { podSandboxId: id });
            print(`${command === 'stopp' ? 'Stopped' : 'Removed'} sandbox ${id}`);
          } catch (e) {
            failed++;
            process.stderr.write(`corral: ${command} ${id}: ${(e as Error).message}\n`);
          }
        }
        return failed === 0 ? 0 : 1;
      }
      case 'pods': {
        const filter: any = {};
        if (values.id) filter.id = values.id;
        if (values.state) filter.state = { state: values.state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY' };
        const labels = (values.label as string[] | undefined) ?? [];
        if (labels.length > 0) filter.labelSelector = Object.fromEntries(labels.map((l) => l.split('=', 2) as [string, string]));
        const { items } = await rpc('ListPodSandbox', { filter });
        if (values.quiet) {
          for (const i of items) print(i.id);
        } else if (values.output === 'json') {
          print(JSON.stringify({ items }, null, 2));
        } else {
          const rows = items.map((i: any) => [
            i.id.slice(0, 13), ago(i.createdAt), i.state === 'SANDBOX_READY' ? 'Ready' : 'NotReady',
            i.metadata.name, i.metadata.namespace, String(i.metadata.attempt), i.runtimeHandler || '(default)',
          ]);
          print(table(['POD ID', 'CREATED', 'STATE', 'NAME', 'NAMESPACE', 'ATTEMPT', 'RUNTIME'], rows));
        }
        return 0;
      }
      case 'inspectp': {
        if (positionals.length === 0) throw new Error('inspectp needs at least one pod sandbox ID');
        for (const id of positionals) {
          const r = await rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
          const info = Object.fromEntries(Object.entries(r.info ?? {}).map(([k, v]) => [k, tryJson(v as string)]));
          print(JSON.stringify({ status: r.status, info }, null, 2));
        }
        return 0;
      }
    }
    throw new Error(`unknown command ${command}`);
  } finally {
    client.close();
  }
}

function print(s: string): void {
  process.stdout.write(s + '\n');
}

function tryJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s);
  if (!m) throw new Error(`bad timeout "${s}" (use e.g. 30s, 2m)`);
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
}
