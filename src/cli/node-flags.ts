/**
 * The Node.js flags `corral serve` runs with. V8 takes them only on the command line, so
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
