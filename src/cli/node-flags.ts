/**
 * The Node.js flags `corral serve` runs with. V8 takes them only on the command line, so
 * the launchers pass them: scripts/start.sh and the `corral` wrapper scripts/install.sh
 * writes (test/unit/node-flags.test.ts keeps both in step with this list).
 *
 * --max-semi-space-size=1: V8's young generation grows to 2 × 16 MiB semi-spaces here;
 *   the daemon allocates little per call, and 1 MiB semi-spaces keep ~6 MiB off its idle
 *   RSS without a measurable cost on RunPodSandbox (bench/README.md, "Scale and memory").
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];
