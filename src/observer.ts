/**
 * What the domain services tell whoever watches them: the Prometheus metrics (src/metrics/)
 * when metrics_address is set, nobody otherwise. The domain knows this interface only, never
 * a metrics library or the transport; each call is cheap and never throws.
 */
export interface RuntimeObserver {
  /** A RunPodSandbox ('run') or StopPodSandbox ('stop') finished: milliseconds per step (as `crictl inspectp` shows them). */
  sandboxSteps(operation: 'run' | 'stop', runtimeHandler: string, timingsMs: Readonly<Record<string, number>>): void;
  /** Running a CNI plugin failed (non-zero exit, not found, timed out, exec failure). */
  cniPluginFailed(plugin: string, verb: string): void;
  /** An OCI runtime command (or conmon's create, which runs one) failed. */
  runtimeFailed(runtimeHandler: string, operation: string): void;
  /** An image pull finished: bytes downloaded from the registry, or why it failed (an error kind). */
  imagePulled(pull: { seconds: number; bytes: number; failure?: string }): void;
}

/** Metrics off: every report goes nowhere. */
export const NO_OBSERVER: RuntimeObserver = Object.freeze({
  sandboxSteps() {},
  cniPluginFailed() {},
  runtimeFailed() {},
  imagePulled() {},
});
