/** Small process helpers shared by the stores that take over what a dead process left. */

/** Whether a process with this PID exists (EPERM: it exists, we just may not signal it). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
