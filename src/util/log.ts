import { writeSync } from 'node:fs';
import { pino, type Logger } from 'pino';

export type { Logger };

export type LogFormat = 'json' | 'text';

/**
 * Logs go to stderr (stdout stays free for CLI output), synchronously so nothing is lost
 * when the process exits. `json`: pino's one object per line, for log collectors. `text`:
 * the same records rewritten as `time LEVEL msg key=value...` lines, for people reading
 * journalctl or a terminal.
 */
export function createLogger(level: string = 'info', destination: number = 2, format: LogFormat = 'json'): Logger {
  const options = { level, base: { svc: 'corral' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'text') return pino(options, textDestination(destination));
  return pino(options, pino.destination({ fd: destination, sync: true }));
}

/** A logger that drops everything; for unit tests and CLI paths that must stay quiet. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** A pino destination that rewrites each JSON record as a text line (no extra dependency). */
function textDestination(fd: number): { write(record: string): void } {
  return {
    write(record: string) {
      writeSync(fd, formatTextLine(record) + '\n');
    },
  };
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/**
 * One pino JSON record → `2026-01-02T03:04:05.678Z INFO  message key=value key="two words"`.
 * Every value stays on the line (newlines in a stack are escaped), so one record is one line
 * and grep still finds it. A record that is not JSON is passed through as it is.
 */
export function formatTextLine(record: string): string {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(record) as Record<string, unknown>;
  } catch {
    return record.replace(/\n+$/, '');
  }
  const { time, level, msg, svc: _svc, ...fields } = obj;
  const levelName = (typeof level === 'number' ? LEVEL_NAMES[level] : undefined) ?? String(level).toUpperCase();
  let line = `${String(time ?? '')} ${levelName.padEnd(5)} ${typeof msg === 'string' ? escapeNewlines(msg) : ''}`;
  for (const [k, v] of Object.entries(fields)) line += ` ${k}=${formatValue(v)}`;
  return line.trimEnd();
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=\\]+$/.test(v) ? v : JSON.stringify(v);
  if (v === undefined) return '';
  return JSON.stringify(v);
}

function escapeNewlines(s: string): string {
  return s.replace(/\r?\n/g, '\\n');
}
