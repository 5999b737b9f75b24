/**
 * What the daemon does with an error nothing else handled.
 *
 * Every CRI call already answers its own failures (CriServer wraps each handler: a throw or
 * a rejection becomes that call's gRPC status). What reaches this module is a bug: a promise
 * whose rejection nobody awaits, or an exception thrown synchronously from a callback.
 *
 * - An unhandled rejection is logged (error level, with its stack) and the daemon keeps
 *   serving. A rejected promise has already stopped running: it cannot leave a half-done
 *   synchronous update behind, and the call that started it has answered or will run into
 *   its deadline. Exiting instead (Node's default) turns one bad input into a crash loop,
 *   since kubelet retries the same call after the restart.
 * - An uncaught exception is logged (fatal level, with its stack) and starts the same
 *   graceful shutdown as SIGTERM: no new calls, in-flight calls get the grace period, then
 *   the process exits with EXIT_UNCAUGHT_EXCEPTION so the supervisor restarts it. A throw
 *   from an event callback can abandon a synchronous update half-way (a lock held, a map
 *   half-changed); Node's own documentation says resuming after it is unsafe. Corral keeps
 *   its state on disk and pods keep running across a restart, so a restart is cheap and
 *   re-derives memory from disk, while serving on with corrupt in-memory state could make
 *   wrong decisions about host resources as root.
 */
import type { Logger } from '../util/log.js';

/** Exit status after an uncaught exception (EX_SOFTWARE: an internal software error). */
export const EXIT_UNCAUGHT_EXCEPTION = 70;

export interface ProcessPolicyOptions {
  logger: Logger;
  /** Called once, on the first uncaught exception: begin a graceful shutdown. */
  onUncaughtException(err: unknown): void;
}

/** The events this policy listens to; `process` in the daemon, an EventEmitter in unit tests. */
export interface ProcessEvents {
  on(event: 'unhandledRejection', listener: (reason: unknown) => void): unknown;
  on(event: 'uncaughtException', listener: (err: Error, origin: string) => void): unknown;
  off(event: 'unhandledRejection', listener: (reason: unknown) => void): unknown;
  off(event: 'uncaughtException', listener: (err: Error, origin: string) => void): unknown;
}

function describe(reason: unknown): { err: string; stack?: string } {
  if (reason instanceof Error) return { err: reason.message || reason.name, stack: reason.stack };
  let text: string;
  try {
    text = typeof reason === 'string' ? reason : JSON.stringify(reason) ?? String(reason);
  } catch {
    text = String(reason);
  }
  return { err: text };
}

/** Installs the policy; returns a function that removes it. */
export function installProcessPolicy(proc: ProcessEvents, opts: ProcessPolicyOptions): () => void {
  let shuttingDown = false;
  const onRejection = (reason: unknown) => {
    opts.logger.error(describe(reason), 'unhandled promise rejection (a Corral bug): logged; the daemon keeps serving');
  };
  const onException = (err: Error, origin: string) => {
    opts.logger.fatal({ ...describe(err), origin }, shuttingDown
      ? 'uncaught exception during shutdown (a Corral bug)'
      : 'uncaught exception (a Corral bug): shutting down gracefully so the supervisor restarts the daemon');
    if (shuttingDown) return;
    shuttingDown = true;
    try {
      opts.onUncaughtException(err);
    } catch (e) {
      opts.logger.fatal(describe(e), 'could not begin the shutdown');
    }
  };
  proc.on('unhandledRejection', onRejection);
  proc.on('uncaughtException', onException);
  return () => {
    proc.off('unhandledRejection', onRejection);
    proc.off('uncaughtException', onException);
  };
}
