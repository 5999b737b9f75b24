/**
 * `corral serve`: load the configuration, start the daemon, stop gracefully on SIGTERM/SIGINT,
 * and apply the process policy for unhandled errors (process-policy.ts).
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/config.js';
import { createLogger } from '../util/log.js';
import type { Daemon } from '../daemon.js';
import { EXIT_UNCAUGHT_EXCEPTION, installProcessPolicy } from './process-policy.js';
import { parseOptions } from './commands.js';

export async function serveCommand(argv: string[]): Promise<number> {
  const values = parseArgs({ args: argv, options: parseOptions('serve') }).values as Record<string, string | undefined>;
  let cfg;
  try {
    cfg = await loadConfig(values.config, { socket: values.socket, rootDir: values.root, stateDir: values.state, logLevel: values['log-level'] });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`corral: configuration refused: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('corral: serve must run as root (network namespaces, mounts, OCI runtimes)\n');
    return 1;
  }
  const logger = createLogger(cfg.logLevel, 2, cfg.logFormat);
  const graceMs = cfg.shutdownGraceSeconds * 1000;

  let daemon: Daemon | undefined;
  let stopping = false;
  let resolveExit!: (code: number) => void;
  const exited = new Promise<number>((resolve) => (resolveExit = resolve));
  const stop = (reason: string, exitCode: number) => {
    if (stopping || !daemon) return;
    stopping = true;
    logger.info({ reason, inFlight: daemon.server.inFlight() }, 'shutting down: no new calls, finishing in-flight ones');
    daemon.shutdown(graceMs).then(
      () => resolveExit(exitCode),
      (e: Error) => {
        logger.error({ err: e.message }, 'shutdown failed');
        resolveExit(exitCode || 1);
      },
    );
  };
  installProcessPolicy(process, {
    logger,
    onUncaughtException: () => {
      // Not serving yet: nothing to drain, and a half-started daemon is not worth keeping.
      if (!daemon) process.exit(EXIT_UNCAUGHT_EXCEPTION);
      stop('uncaught exception', EXIT_UNCAUGHT_EXCEPTION);
      // If the graceful path itself is stuck (the state is suspect), exit anyway.
      setTimeout(() => process.exit(EXIT_UNCAUGHT_EXCEPTION), graceMs + 10_000).unref();
    },
  });

  const { startDaemon } = await import('../daemon.js');
  daemon = await startDaemon(cfg, logger);
  // Until here SIGTERM/SIGINT keep their default action (end the process), so a start-up
  // that hangs can still be stopped.
  process.on('SIGTERM', () => stop('SIGTERM', 0));
  process.on('SIGINT', () => stop('SIGINT', 0));
  return exited;
}
