import { pino, type Logger } from 'pino';

export type { Logger };

/** One JSON object per line on stderr, so stdout stays free for CLI output. */
export function createLogger(level: string = 'info', destination: number = 2): Logger {
  return pino({ level, base: { svc: 'corral' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: destination, sync: true }));
}

/** A logger that drops everything; for unit tests and CLI paths that must stay quiet. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
