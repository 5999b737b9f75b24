/** Small process helpers: is a PID alive, and is it still the process it was. */
import { readFileSync } from 'node:fs';

/** Whether a process with this PID exists (EPERM: it exists, we just may not signal it). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Start time (clock ticks since boot) of a process, to tell a live PID from a reused one. */
export async function processStartTime(pid: number): Promise<string | null> {
  try {
    // Synchronous: procfs answers from memory, and ListPodSandbox asks this of every pause
    // pod; through the thread pool (open, fstat, read, close) 200 pods took 70 ms a call.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // A zombie (Z) or dead (X) process has exited; its PID is not reaped yet (or never, when PID 1 does not reap).
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}
