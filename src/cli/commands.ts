/**
 * Every `corral` command and flag, in one table: the parsers of the command files take their
 * options from here and `corral --help` / `corral COMMAND --help` print it, so a flag cannot
 * be accepted without being documented, or documented without being accepted. Data only (no
 * imports at run time): --help stays fast.
 */
import type { ParseArgsConfig } from 'node:util';

export interface FlagSpec {
  long: string;
  short?: string;
  /** Placeholder of the value; absent = a boolean switch. */
  value?: string;
  multiple?: boolean;
  help: string;
}

export interface CommandSpec {
  /** As typed: "pods", "image import". */
  name: string;
  group: 'daemon' | 'client' | 'node';
  /** Positional arguments, as shown in the usage line. */
  args: string;
  summary: string;
  flags: FlagSpec[];
  /** Everything after the first positional is the command's own (exec's CMD [ARG...]), flags included. */
  trailingCommand?: boolean;
}

export const DEFAULT_ENDPOINT = 'unix:///run/corral/corral.sock';

const configFlag: FlagSpec = { long: 'config', short: 'c', value: 'FILE', help: 'configuration file (default /etc/corral/config.toml)' };
const clientFlags: FlagSpec[] = [
  { long: 'runtime-endpoint', short: 'r', value: 'ENDPOINT', help: `the daemon's socket (default $CONTAINER_RUNTIME_ENDPOINT, else ${DEFAULT_ENDPOINT})` },
  { long: 'timeout', short: 't', value: 'DURATION', help: 'deadline of each call, e.g. 30s, 2m (default 2m)' },
];
const quiet: FlagSpec = { long: 'quiet', short: 'q', help: 'print IDs only' };
const output: FlagSpec = { long: 'output', short: 'o', value: 'table|json', help: 'output format (default table)' };

function client(name: string, args: string, summary: string, flags: FlagSpec[] = []): CommandSpec {
  return { name, group: 'client', args, summary, flags: [...flags, ...clientFlags] };
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'serve',
    group: 'daemon',
    args: '',
    summary: 'run the CRI daemon in the foreground (as root)',
    flags: [
      configFlag,
      { long: 'socket', value: 'PATH', help: 'CRI socket to listen on (overrides socket)' },
      { long: 'root', value: 'DIR', help: 'persistent state directory (overrides root_dir)' },
      { long: 'state', value: 'DIR', help: 'volatile state directory (overrides state_dir)' },
      { long: 'log-level', value: 'LEVEL', help: 'trace | debug | info | warn | error (overrides log_level)' },
    ],
  },
  { name: 'doctor', group: 'daemon', args: '', summary: "check this host's prerequisites and say what to install", flags: [configFlag] },
  client('version', '', 'runtime name and versions'),
  client('info', '', 'runtime status and configuration (Status, verbose)'),
  client('runp', 'FILE', 'run a pod sandbox from a crictl-style JSON file', [
    { long: 'runtime', value: 'HANDLER', help: 'runtime handler (default: the default_runtime)' },
  ]),
  client('stopp', 'ID...', 'stop pod sandboxes'),
  client('rmp', 'ID...', 'remove pod sandboxes', [
    { long: 'all', short: 'a', help: 'remove every pod sandbox' },
    { long: 'force', short: 'f', help: 'stop a running pod sandbox before removing it' },
  ]),
  client('pods', '', 'list pod sandboxes', [
    { long: 'id', value: 'PREFIX', help: 'only the pod sandbox with this ID (or unique prefix)' },
    { long: 'state', short: 's', value: 'ready|notready', help: 'only pod sandboxes in this state' },
    { long: 'label', value: 'KEY=VALUE', multiple: true, help: 'only pod sandboxes with this label (repeatable)' },
    quiet,
    output,
  ]),
  client('inspectp', 'ID...', 'pod sandbox status (verbose)'),
  client('pull', 'IMAGE', "pull an image, showing each layer's progress", [
    { long: 'creds', value: 'USER:PASSWORD', help: 'registry credentials' },
    { ...configFlag, help: 'configuration file, to find the download directory for progress (default /etc/corral/config.toml)' },
  ]),
  // crictl's flags: -t is --tty here, so the call deadline is --timeout alone.
  {
    name: 'exec',
    group: 'client',
    args: 'CONTAINER CMD [ARG...]',
    summary: 'run a command in a running container, streaming its stdio; exits with its exit code',
    trailingCommand: true,
    flags: [
      { long: 'interactive', short: 'i', help: 'pass stdin to the command (its EOF closes the command\'s stdin)' },
      { long: 'tty', short: 't', help: 'allocate a terminal (raw mode and window size of this one when stdin is a terminal)' },
      { long: 'timeout', value: 'DURATION', help: 'end the session (and the command) after this long, e.g. 30s, 2m (default: none)' },
      clientFlags[0]!,
    ],
  },
  {
    name: 'attach',
    group: 'client',
    args: 'CONTAINER',
    summary: "attach to a running container's stdio (Ctrl-C detaches; the container runs on)",
    flags: [
      { long: 'interactive', short: 'i', help: "pass stdin to the container's stdin" },
      { long: 'tty', short: 't', help: 'the container has a terminal: raw mode and window size of this one' },
      clientFlags[0]!,
    ],
  },
  client('port-forward', 'POD [LOCAL:]REMOTE...', 'forward 127.0.0.1:LOCAL to port REMOTE in a pod, each connection over its own stream, until Ctrl-C (LOCAL 0 = any free port)'),
  client('ps', '', 'list containers (the running ones; -a: all)', [
    { long: 'all', short: 'a', help: 'containers in every state' },
    { long: 'id', value: 'PREFIX', help: 'only the container with this ID (or unique prefix)' },
    { long: 'pod', short: 'p', value: 'POD', help: 'only the containers of this pod sandbox (ID, unique ID prefix or name)' },
    { long: 'name', value: 'REGEX', help: 'only containers whose name matches this regular expression' },
    { long: 'state', short: 's', value: 'created|running|exited|unknown', help: 'only containers in this state' },
    { long: 'label', value: 'KEY=VALUE', multiple: true, help: 'only containers with this label (repeatable)' },
    { long: 'latest', short: 'l', help: 'only the most recently created container (in any state)' },
    { long: 'last', short: 'n', value: 'N', help: 'only the N most recently created containers (in any state)' },
    { long: 'no-trunc', help: 'full IDs' },
    quiet,
    output,
  ]),
  // crictl's flags: -t is --timestamps here, so the call deadline is --timeout alone.
  {
    name: 'logs',
    group: 'client',
    args: 'CONTAINER',
    summary: "print a container's log (by ID, unique ID prefix or name); -f follows it, across log rotations, until the container stops",
    flags: [
      { long: 'follow', short: 'f', help: 'keep printing new lines until the container stops (Ctrl-C ends it)' },
      { long: 'tail', value: 'N', help: 'only the last N lines (default: all)' },
      { long: 'timestamps', short: 't', help: 'prefix each line with the time it was written (RFC 3339, UTC)' },
      { long: 'since', value: 'TIME', help: 'only what was written at or after TIME: RFC 3339 (2026-12-03T10:00:00Z) or a duration back from now (30s, 5m, 1h30m)' },
      { long: 'limit-bytes', value: 'N', help: 'stop after N bytes of output' },
      { long: 'previous', short: 'p', help: "the previous instance's log (the container's attempt - 1), as kubelet kept it" },
      { long: 'timeout', value: 'DURATION', help: 'deadline of each call to the daemon, e.g. 30s, 2m (default 2m)' },
      clientFlags[0]!,
    ],
  },
  client('stats', '[CONTAINER...]', 'CPU, memory and writable-layer usage of containers (the running ones; -a: all)', [
    { long: 'all', short: 'a', help: 'containers in every state' },
    { long: 'pod', short: 'p', value: 'POD', help: 'only the containers of this pod sandbox (ID, unique ID prefix or name)' },
    { long: 'label', value: 'KEY=VALUE', multiple: true, help: 'only containers with this label (repeatable)' },
    { long: 'seconds', short: 's', value: 'N', help: 'CPU % is measured over N seconds (default 1)' },
    { ...output, help: 'output format (default table; json: the raw ListContainerStats answer, at once)' },
  ]),
  client('statsp', '[POD...]', 'CPU, memory and network usage of pod sandboxes (the ready ones)', [
    { long: 'label', value: 'KEY=VALUE', multiple: true, help: 'only pod sandboxes with this label (repeatable)' },
    { long: 'seconds', short: 's', value: 'N', help: 'CPU % is measured over N seconds (default 1)' },
    { ...output, help: 'output format (default table; json: the raw ListPodSandboxStats answer, at once)' },
  ]),
  client('images', '[IMAGE]', 'list images', [quiet, output]),
  client('inspecti', 'IMAGE...', 'image status (verbose)'),
  client('rmi', 'IMAGE...', 'remove images (by tag, ID, ID prefix or digest)'),
  {
    name: 'image import',
    group: 'node',
    args: 'FILE',
    summary: 'load an OCI image layout archive or a "docker save" archive into this node\'s store (no daemon needed)',
    flags: [configFlag],
  },
];

const helpFlag: FlagSpec = { long: 'help', short: 'h', help: 'show this help' };

export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/**
 * The arguments as parseArgs should see them: for a command with a trailing command, a `--`
 * after its first positional, so `exec ID ls -l` keeps `-l` for ls (as crictl does).
 */
export function commandArgs(name: string, args: string[]): string[] {
  const spec = findCommand(name);
  if (!spec?.trailingCommand) return args;
  const takesValue = (f: FlagSpec | undefined) => f?.value !== undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return args;
    if (a.startsWith('--')) {
      if (!a.includes('=') && takesValue(spec.flags.find((f) => f.long === a.slice(2)))) i++;
    } else if (a.startsWith('-') && a !== '-') {
      // A group of short flags: a value flag takes the rest of the group, or the next argument.
      for (let j = 1; j < a.length; j++) {
        if (takesValue(spec.flags.find((f) => f.short === a[j]))) {
          if (j === a.length - 1) i++;
          break;
        }
      }
    } else {
      return [...args.slice(0, i + 1), '--', ...args.slice(i + 1)];
    }
  }
  return args;
}

/** parseArgs options of a command (with -h/--help). */
export function parseOptions(name: string): NonNullable<ParseArgsConfig['options']> {
  const spec = findCommand(name);
  if (!spec) throw new Error(`unknown command ${name}`);
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const f of [...spec.flags, helpFlag]) {
    options[f.long] = { type: f.value ? 'string' : 'boolean', ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}) };
  }
  return options;
}

function flagLabel(f: FlagSpec): string {
  return `${f.short ? `-${f.short}, ` : '    '}--${f.long}${f.value ? ` ${f.value}` : ''}`;
}

/** `corral COMMAND --help`. */
export function commandHelp(spec: CommandSpec): string {
  const flags = [...spec.flags, helpFlag];
  const width = Math.max(...flags.map((f) => flagLabel(f).length));
  const lines = [
    `usage: corral ${spec.name}${spec.flags.length ? ' [flags]' : ''}${spec.args ? ` ${spec.args}` : ''}`,
    '',
    spec.summary,
    '',
    'flags:',
    ...flags.map((f) => `  ${flagLabel(f).padEnd(width)}  ${f.help}`),
  ];
  if (spec.group === 'client') lines.push('', 'The daemon must be running: systemctl start corral, or corral serve. The socket is root\'s: run as root.');
  if (spec.group === 'node' || spec.name === 'serve') lines.push('', 'Run as root.');
  return lines.join('\n') + '\n';
}

const GROUP_TITLES: Record<CommandSpec['group'], string> = {
  daemon: 'daemon:',
  client: 'client (crictl-style; talks to the daemon over its socket):',
  node: 'images on this node (no daemon needed; run as root):',
};

/** `corral --help`: every command with its flags. */
export function usage(): string {
  const out = ['usage: corral COMMAND [flags] [args]', '       corral COMMAND --help   (the flags of one command, explained)', '       corral --version'];
  for (const group of ['daemon', 'client', 'node'] as const) {
    out.push('', GROUP_TITLES[group]);
    for (const c of COMMANDS.filter((x) => x.group === group)) {
      const own = group === 'client' && c.flags.includes(clientFlags[1]!) ? c.flags.filter((f) => !clientFlags.includes(f)) : c.flags;
      const flags = own.map((f) => `[${f.short ? `-${f.short}|` : ''}--${f.long}${f.value ? ` ${f.value}` : ''}]${f.multiple ? '...' : ''}`).join(' ');
      out.push(`  ${c.name.padEnd(13)} ${c.summary}`);
      const synopsis = [flags, c.args].filter(Boolean).join(' ');
      if (synopsis) out.push(`  ${''.padEnd(13)}   ${synopsis}`);
    }
    if (group === 'client') {
      out.push(`  every other client command also takes: ${clientFlags.map((f) => `[-${f.short}|--${f.long} ${f.value}]`).join(' ')}`);
    }
  }
  out.push(
    '',
    'The daemon: systemctl start corral (installed by scripts/install.sh), or corral serve in the foreground, or scripts/start.sh.',
  );
  return out.join('\n') + '\n';
}
