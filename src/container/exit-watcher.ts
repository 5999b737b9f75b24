/**
 * Notices containers that exit by themselves: conmon writes `<exit dir>/<id>` when the
 * container exits, and an inotify watch on that folder hands the ID over at once. A slow
 * sweep backs the watch up (inotify can overflow its queue; the folder can be replaced), so
 * an exit is never noticed later than one sweep interval.
 */
import { readdirSync, watch, type FSWatcher } from 'node:fs';
import type { Logger } from '../util/log.js';

export interface ExitWatcherOptions {
  exitDir: string;
  /** Called with the name of a file that appeared or changed in exitDir (a container ID). */
  onExit: (id: string) => Promise<void>;
  /** Called every sweepMs: check every live container. */
  sweep: () => Promise<void>;
  sweepMs?: number;
  logger: Logger;
}

export interface ExitWatcher {
  close(): void;
}

const DEFAULT_SWEEP_MS = 5_000;

export function watchExits(o: ExitWatcherOptions): ExitWatcher {
  const log = o.logger;
  const fail = (what: string) => (e: unknown) => log.warn({ err: (e as Error)?.message }, what);
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(o.exitDir, { persistent: false }, (_event, name) => {
      if (name) void o.onExit(name.toString()).catch(fail('recording a container exit failed'));
    });
    watcher.on('error', (e) => {
      log.warn({ err: e.message, dir: o.exitDir }, 'watching conmon exit files failed; exits are noticed by the sweep only');
      watcher?.close();
      watcher = undefined;
    });
  } catch (e) {
    log.warn({ err: (e as Error).message, dir: o.exitDir }, 'cannot watch conmon exit files; exits are noticed by the sweep only');
  }
  let sweeping = false;
  const timer = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    o.sweep().catch(fail('sweeping container exits failed')).finally(() => (sweeping = false));
  }, o.sweepMs ?? DEFAULT_SWEEP_MS);
  timer.unref();
  return {
    close() {
      clearInterval(timer);
      watcher?.close();
      watcher = undefined;
    },
  };
}

/**
 * The names in conmon's exit folder: the IDs of containers whose exit is recorded (or being
 * written). An empty set when the folder does not exist yet (no container was ever created);
 * undefined when it cannot be read. Synchronous: one small folder on the state dir's tmpfs,
 * listed for each ListContainers.
 */
export function exitFileNames(exitDir: string): ReadonlySet<string> | undefined {
  try {
    return new Set(readdirSync(exitDir));
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? new Set() : undefined;
  }
}
