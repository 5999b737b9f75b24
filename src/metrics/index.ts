/**
 * The Prometheus metrics, as the daemon uses them: imported with import() only when
 * metrics_address is set, so a daemon without metrics never loads prom-client.
 */
import { parseListenAddress } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { CorralMetrics } from './registry.js';
import { MetricsServer } from './server.js';

export { CorralMetrics, type StateSources } from './registry.js';
export { MetricsServer } from './server.js';

/** The metrics and their HTTP endpoint, listening on metricsAddress (validated by the config). */
export async function startMetrics(metricsAddress: string, logger: Logger): Promise<{ metrics: CorralMetrics; server: MetricsServer }> {
  const { host, port } = parseListenAddress(metricsAddress);
  const metrics = new CorralMetrics(logger);
  const server = await MetricsServer.start({ host, port, metrics, logger });
  return { metrics, server };
}
