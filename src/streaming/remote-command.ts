/**
 * The remote-command protocols (v1–v4.channel.k8s.io) over a SPDY session: collect the
 * streams the CRI request implies, run the exec or attach, then end as client-go expects
 * (§3.6 of the streaming reference): outputs FIN'd, the status on the error stream, its
 * FIN, then GOAWAY and a graceful close. A client that leaves aborts the session's signal.
 */
import type { Logger } from '../util/log.js';
import type { StreamingRuntime, StreamIO } from './runtime.js';
import type { AttachRequest, ExecRequest } from './token-cache.js';
import type { SpdySession, SpdyStream } from './spdy-session.js';
import { RstStatus } from './spdy-frames.js';
import { resizeEvents } from './resize.js';
import { errorStreamPayload, runSession } from './status.js';

export const REMOTE_COMMAND_PROTOCOLS = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];
/** How long the client has to open every stream the request implies (kubelet's 30 s). */
export const STREAM_CREATION_TIMEOUT_MS = 30_000;

type StreamType = 'error' | 'stdin' | 'stdout' | 'stderr' | 'resize';
const STREAM_TYPES: readonly string[] = ['error', 'stdin', 'stdout', 'stderr', 'resize'];

/** The stream types a request implies (the server counts from the CRI request, not the client). */
export function expectedStreams(req: ExecRequest | AttachRequest, protocol: string): StreamType[] {
  const types: StreamType[] = ['error'];
  if (req.stdin) types.push('stdin');
  if (req.stdout) types.push('stdout');
  if (req.stderr && !req.tty) types.push('stderr');
  if (req.tty && (protocol === 'v3.channel.k8s.io' || protocol === 'v4.channel.k8s.io')) types.push('resize');
  return types;
}

export async function serveRemoteCommand(
  session: SpdySession,
  protocol: string,
  req: ExecRequest | AttachRequest,
  runtime: StreamingRuntime,
  logger: Logger,
  creationTimeoutMs = STREAM_CREATION_TIMEOUT_MS,
): Promise<void> {
  const expected = expectedStreams(req, protocol);
  const streams = new Map<StreamType, SpdyStream>();
  const gone = new AbortController();
  session.once('close', () => gone.abort());

  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      logger.info({ have: [...streams.keys()], want: expected }, 'timed out waiting for the client to create its streams');
      done(false);
    }, creationTimeoutMs);
    const onStream = async (s: SpdyStream) => {
      const type = s.headers.get('streamtype') ?? '';
      await s.accept(); // a stream counts once its SYN_REPLY is out (as kubelet counts)
      if (session.closed) return;
      if (!STREAM_TYPES.includes(type) || !expected.includes(type as StreamType)) {
        logger.debug({ type }, 'ignoring an unexpected stream');
        s.discard();
        return;
      }
      streams.get(type as StreamType)?.reset(RstStatus.CANCEL); // a duplicate replaces the earlier one
      streams.set(type as StreamType, s);
      if (expected.every((t) => streams.has(t))) done(true);
    };
    let settled = false;
    const onClose = () => done(false);
    const done = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.off('close', onClose);
      resolve(ok);
    };
    session.on('stream', (s: SpdyStream) => {
      // Streams arriving after the wait ended are answered and drained below.
      if (!settled) void onStream(s);
    });
    session.on('close', onClose);
  });
  if (!ready) {
    session.close();
    return;
  }
  // Late or extra streams are answered and drained, never left to wedge the connection.
  session.on('stream', (s: SpdyStream) => {
    void s.accept();
    s.discard();
  });

  const errorStream = streams.get('error')!;
  errorStream.discard(); // clients never write on it
  errorStream.on('reset', () => gone.abort());
  const resize = streams.get('resize') ?? null;
  const io: StreamIO = {
    stdin: streams.get('stdin') ?? null,
    stdout: streams.get('stdout') ?? null,
    stderr: streams.get('stderr') ?? null,
    tty: req.tty,
    resize: resize ? resizeEvents(resize) : null,
    signal: gone.signal,
  };

  const outcome = await runSession(runtime, req, io, logger);

  if (!session.closed) {
    await Promise.all([finish(io.stdout as SpdyStream | null), finish(io.stderr as SpdyStream | null)]);
    const payload = errorStreamPayload(outcome, protocol);
    if (payload.length > 0 && !errorStream.wasReset) errorStream.write(payload);
    await finish(errorStream);
  }
  // What the client still sends on stdin is read and dropped until the connection closes.
  (io.stdin as SpdyStream | null)?.discard();
  if (io.stdin) await finish(io.stdin as SpdyStream);
  session.close();
}

/** Ends our side of a stream (FIN) and waits until it is on the socket, or the stream is gone. */
function finish(s: SpdyStream | null): Promise<void> {
  if (!s || s.wasReset || s.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      s.off('finish', done);
      s.off('reset', done);
      s.off('close', done);
      resolve();
    };
    s.on('finish', done);
    s.on('reset', done);
    s.on('close', done);
    if (!s.writableEnded) s.end();
  });
}
