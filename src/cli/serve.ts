/** `corral serve`: load the configuration, start the daemon, stop gracefully on SIGTERM/SIGINT. */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/config.js';
import { createLogger } from '../util/log.js';

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      socket: { type: 'string' },
      root: { type: 'string' },
      state: { type: 'string' },
      'log-level': { type: 'string' },
    },
  });
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
  const logger = createLogger(cfg.logLevel);
  const { startDaemon } = await import('../daemon.js');
  const daemon = await startDaemon(cfg, logger);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, inFlight: daemon.server.inFlight() }, 'shutting down: no new calls, finishing in-flight ones');
      daemon.shutdown(cfg.shutdownGraceSeconds * 1000).then(
        () => resolve(0),
        (e: Error) => {
          logger.error({ err: e.message }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
