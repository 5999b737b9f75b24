/**
 * The Node.js flags `corral serve` runs with (and below, its environment: DAEMON_ENV). V8 takes them only on the command line, so
 * the launchers read this list and pass it: scripts/start.sh and the `corral` wrapper
 * scripts/install.sh writes (test/integration/install-script.test.ts checks the wrapper);
 * TestDaemon and the benches' BenchCorral do the same.
 *
 * --max-semi-space-size=1: V8's young generation grows to 2 × 16 MiB semi-spaces here;
 *   the daemon allocates little per call, and 1 MiB semi-spaces keep ~6 MiB off its idle
 *   RSS without a measurable cost on RunPodSandbox (bench/README.md, "Scale and memory").
 * --expose-gc: one full collection once pulls have settled (src/util/idle-collector.ts) gives
 *   back the ~10–20 MiB of Buffers a pull leaves for V8 to collect "some time".
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--expose-gc'];

/**
 * glibc malloc settings of `corral serve` (GLIBC_TUNABLES, which glibc reads only at process
 * start, so the launchers give them like the flags above).
 *
 * mmap_threshold=32768: every allocation of 32 KiB or more (a pull's network chunks, its
 *   1 MiB write batches: the Buffers behind them come from malloc) gets its own mmap and goes
 *   back to the kernel when freed. By default glibc raises the threshold to the size of the
 *   largest mmapped chunk freed (up to 32 MiB), so after the first pull those Buffers come from
 *   the main heap, and the few that live on between the freed ones keep it from shrinking:
 *   5 cold pulls of 4 × 24 MiB files left the daemon's RSS 15 s later 3.2–48.5 MiB over idle
 *   (median 24.8, 9 runs); with this setting −1.8 to +4.0 (6 runs), [heap] back to 4 MiB.
 *   It costs page faults: ~10,000 more per such pull (+40 ms of the daemon's CPU, +19 %; +7 %
 *   with the unpacker's), none measurable on thousands of small files or per pod cycle
 *   (bench/heapbench.ts, cpubench; bench/README.md, "After pulls"). A fixed threshold also fixes
 *   trim_threshold at its 128 KiB default. arena_max 1/2/4 did not help: the growth is in the
 *   main heap, not in the threads' arenas.
 */
export const DAEMON_GLIBC_TUNABLES = 'glibc.malloc.mmap_threshold=32768';

/** The environment every launcher gives `corral serve` on top of its own. */
export const DAEMON_ENV: Readonly<Record<string, string>> = { GLIBC_TUNABLES: DAEMON_GLIBC_TUNABLES };

/**
 * The daemon's environment: `base` plus DAEMON_ENV. A GLIBC_TUNABLES of the user's own is
 * kept, after ours (glibc takes the last of a repeated tunable, so the user's settings win);
 * any other variable the user set is left as it is.
 */
export function daemonEnv(base: NodeJS.ProcessEnv, extra: Readonly<Record<string, string>> = DAEMON_ENV): NodeJS.ProcessEnv {
  const env = { ...base };
  for (const [name, value] of Object.entries(extra)) {
    const own = base[name];
    if (name === 'GLIBC_TUNABLES') env[name] = own ? `${value}:${own}` : value;
    else if (own === undefined) env[name] = value;
  }
  return env;
}

/**
 * The same as POSIX sh lines, for the shell launchers (scripts/start.sh evaluates them; the
 * wrapper scripts/install.sh writes contains them, so a GLIBC_TUNABLES set when the wrapper
 * runs is kept too). The values are ours: only [A-Za-z0-9._=:] (checked).
 */
export function daemonEnvShell(extra: Readonly<Record<string, string>> = DAEMON_ENV): string {
  return Object.entries(extra)
    .map(([name, value]) => {
      if (!/^[A-Z_][A-Z0-9_]*$/.test(name) || !/^[A-Za-z0-9._=:]+$/.test(value)) throw new Error(`daemon environment ${name}: not a plain shell word`);
      const v = name === 'GLIBC_TUNABLES' ? value + '${' + name + ':+:$' + name + '}' : '${' + name + '-' + value + '}';
      return `${name}="${v}"; export ${name}`;
    })
    .join('\n');
}
