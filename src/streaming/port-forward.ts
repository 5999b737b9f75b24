/**
 * The portforward.k8s.io protocol over a SPDY session: for each forwarded connection the
 * client opens an error stream and a data stream with the same `requestid` and `port`;
 * once both are there the runtime bridges the data stream to localhost:port in the pod.
 * Any number of pairs, concurrently, until the client closes the session. The error stream
 * carries text only on a real failure: a non-empty one makes the client drop the whole
 * session, every other forwarded connection included.
 */
import type { Logger } from '../util/log.js';
import type { StreamingRuntime } from './runtime.js';
import type { PortForwardRequest } from './token-cache.js';
import type { SpdySession, SpdyStream } from './spdy-session.js';
import { RstStatus } from './spdy-frames.js';

export const PORT_FORWARD_PROTOCOLS = ['portforward.k8s.io'];
export const PAIR_TIMEOUT_MS = 30_000;

interface Pair {
  error?: SpdyStream;
  data?: SpdyStream;
  port: number;
  timer: NodeJS.Timeout;
}

/** The port a stream names: a decimal 1..65535, else undefined. */
export function parsePort(v: string | undefined): number | undefined {
  if (v === undefined || !/^[0-9]{1,5}$/.test(v)) return undefined;
  const n = Number(v);
  return n >= 1 && n <= 65535 ? n : undefined;
}

export function servePortForward(session: SpdySession, req: PortForwardRequest, runtime: StreamingRuntime, logger: Logger, pairTimeoutMs = PAIR_TIMEOUT_MS): Promise<void> {
  const gone = new AbortController();
  const pairs = new Map<string, Pair>();

  const run = async (key: string, pair: Pair) => {
    clearTimeout(pair.timer);
    const { error, data, port } = pair as Required<Pair>;
    try {
      await runtime.portForward(req.podSandboxId, port, data, gone.signal);
      if (!data.writableEnded) data.end();
      error.end();
    } catch (e) {
      const msg = `error forwarding port ${port} to pod ${req.podSandboxId}, uid : ${(e as Error).message}`;
      logger.info({ sandboxId: req.podSandboxId, port, err: (e as Error).message }, 'port-forward connection failed');
      if (!error.wasReset) error.end(msg);
      data.reset(RstStatus.CANCEL);
    } finally {
      pairs.delete(key);
      data.discard(); // late client data is dropped, never left to wedge the connection
    }
  };

  const onStream = (s: SpdyStream) => {
    const type = s.headers.get('streamtype');
    const port = parsePort(s.headers.get('port'));
    if ((type !== 'error' && type !== 'data') || port === undefined) {
      logger.debug({ type, port: s.headers.get('port') }, 'refusing a port-forward stream without a valid type and port');
      s.reset(RstStatus.REFUSED_STREAM);
      return;
    }
    // Very old clients send no requestid: the pair is then the error stream's ID (data = ID - 2).
    const key = s.headers.get('requestid') ?? String(type === 'error' ? s.id : s.id - 2);
    let pair = pairs.get(key);
    if (!pair) {
      const timer = setTimeout(() => {
        pairs.delete(key);
        const p = pair!;
        if (p.error && !p.error.wasReset) p.error.end('timed out waiting for streams');
        p.data?.reset(RstStatus.CANCEL);
      }, pairTimeoutMs);
      timer.unref();
      pair = { port, timer };
      pairs.set(key, pair);
    }
    void s.accept();
    if (pair[type]) {
      // A second stream of one type for one request: refuse it, say why on the pair's error stream.
      s.reset(RstStatus.PROTOCOL_ERROR);
      pair.error?.write(`${type} stream already assigned`);
      return;
    }
    pair[type] = s;
    if (type === 'error') s.discard(); // the client never writes there (it FINs at once)
    if (pair.error && pair.data) void run(key, pair);
  };
  session.on('stream', onStream);

  return new Promise((resolve) => {
    session.once('close', () => {
      gone.abort();
      for (const p of pairs.values()) clearTimeout(p.timer);
      pairs.clear();
      resolve();
    });
  });
}
