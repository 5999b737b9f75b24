#!/usr/bin/env node
/**
 * The `corral` executable: `corral serve` runs the daemon; the other subcommands are a
 * small CRI client in crictl's style. Each subcommand loads only the modules it needs,
 * so a client call does not pay for the daemon's start-up.
 */
import type { ParseArgsConfig } from 'node:util';

const USAGE = `usage: corral <command> [flags]

daemon:
  serve       run the CRI daemon      [--config FILE] [--socket PATH] [--root DIR] [--state DIR] [--log-level LEVEL]
  doctor      check this host's prerequisites and say what to install   [--config FILE]

client (talks to the daemon; -r/--runtime-endpoint or CONTAINER_RUNTIME_ENDPOINT, default unix:///run/corral/corral.sock):
  version     runtime name and versions
  info        runtime status and configuration (Status, verbose)
  runp        run a pod sandbox from a crictl-style JSON file   [--runtime HANDLER] FILE
  stopp       stop pod sandboxes                                 ID...
  rmp         remove pod sandboxes                               [--all] [--force] ID...
  pods        list pod sandboxes   [--id PREFIX] [--state ready|notready] [--label k=v]... [-q] [-o table|json]
  inspectp    pod sandbox status (verbose)                       ID...
  pull        pull an image, showing each layer's progress      [--creds USER:PASS] IMAGE
  images      list images                                        [-q] [-o table|json] [IMAGE]
  inspecti    image status (verbose)                             IMAGE...
  rmi         remove images (by tag, ID, ID prefix or digest)    IMAGE...

images on this node (no daemon needed; run as root):
  image import FILE   load an OCI image layout archive or a "docker save" archive   [--config FILE]
`;

const clientFlags = {
  'runtime-endpoint': { type: 'string', short: 'r' },
  timeout: { type: 'string', short: 't' },
  help: { type: 'boolean', short: 'h' },
} as const;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return (await import('./serve.js')).serveCommand(rest);
    case 'doctor':
      return (await import('./doctor.js')).doctorCommand(rest);
    case 'version':
    case 'info':
    case 'runp':
    case 'stopp':
    case 'rmp':
    case 'pods':
    case 'inspectp':
      return (await import('./client-commands.js')).clientCommand(command, rest, clientFlags as ParseArgsConfig['options']);
    case 'pull':
    case 'images':
    case 'inspecti':
    case 'rmi':
      return (await import('./image-commands.js')).imageCommand(command, rest, clientFlags as ParseArgsConfig['options']);
    case 'image':
      if (rest[0] === 'import') return (await import('./image-commands.js')).importCommand(rest.slice(1));
      process.stderr.write(`corral: unknown image subcommand "${rest[0] ?? ''}" (try: corral image import FILE)\n`);
      return 2;
    case undefined:
    case 'help':
    case '-h':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    case '--version':
    case '-v':
      process.stdout.write(`corral ${(await import('../version.js')).CORRAL_VERSION}\n`);
      return 0;
    default:
      process.stderr.write(`corral: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}


main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`corral: ${err.message}\n`);
    process.exitCode = 1;
  },
);
