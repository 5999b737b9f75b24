#!/usr/bin/env node
/**
 * The `corral` executable: `corral serve` runs the daemon; the other subcommands are a
 * small CRI client in crictl's style. Each subcommand loads only the modules it needs,
 * so a client call does not pay for the daemon's start-up. Commands and flags are
 * declared once, in commands.ts.
 */
import { parseArgs } from 'node:util';
import { commandArgs, commandHelp, findCommand, parseOptions, usage } from './commands.js';
import { explainLocalError } from './hints.js';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
      process.stderr.write(usage());
      return 2;
    case 'help':
    case '-h':
    case '--help': {
      if (rest.length === 0) {
        process.stdout.write(usage());
        return 0;
      }
      const spec = findCommand(rest.join(' '));
      if (!spec) return unknownCommand(rest.join(' '));
      process.stdout.write(commandHelp(spec));
      return 0;
    }
    case '--version':
    case '-v':
      process.stdout.write(`corral ${(await import('../version.js')).CORRAL_VERSION}\n`);
      return 0;
  }
  let name = command;
  let args = rest;
  if (command === 'image') {
    if (rest[0] === '-h' || rest[0] === '--help' || rest[0] === undefined) {
      (rest[0] === undefined ? process.stderr : process.stdout).write(commandHelp(findCommand('image import')!));
      return rest[0] === undefined ? 2 : 0;
    }
    if (rest[0] !== 'import') {
      process.stderr.write(`corral: unknown image subcommand "${rest[0]}" (try: corral image import FILE; see corral image import --help)\n`);
      return 2;
    }
    name = 'image import';
    args = rest.slice(1);
  }
  const spec = findCommand(name);
  if (!spec) return unknownCommand(name);
  args = commandArgs(name, args);
  // The same options the command parses with: a bad flag is reported here, with where to look.
  let help: boolean;
  try {
    help = parseArgs({ args, options: parseOptions(name), allowPositionals: true }).values.help === true;
  } catch (e) {
    process.stderr.write(`corral ${name}: ${(e as Error).message}\nsee: corral ${name} --help\n`);
    return 2;
  }
  if (help) {
    process.stdout.write(commandHelp(spec));
    return 0;
  }
  switch (name) {
    case 'serve':
      return (await import('./serve.js')).serveCommand(args);
    case 'doctor':
      return (await import('./doctor.js')).doctorCommand(args);
    case 'image import':
      return (await import('./image-commands.js')).importCommand(args);
    case 'pull':
    case 'images':
    case 'inspecti':
    case 'rmi':
      return (await import('./image-commands.js')).imageCommand(name, args);
    case 'exec':
    case 'attach':
      return (await import('./stream-commands.js')).remoteCommand(name, args);
    case 'port-forward':
      return (await import('./stream-commands.js')).portForwardCommand(args);
    case 'ps':
    case 'stats':
    case 'statsp':
      return (await import('./container-commands.js')).containerCommand(name, args);
    case 'logs':
      return (await import('./logs-command.js')).logsCommand(args);
    default:
      return (await import('./client-commands.js')).clientCommand(name, args);
  }
}

function unknownCommand(name: string): number {
  process.stderr.write(`corral: unknown command "${name}"\n\n${usage()}`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`corral: ${explainLocalError(err)}\n`);
    process.exitCode = 1;
  },
);
