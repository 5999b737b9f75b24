/**
 * What to do about the errors a user meets first: a daemon that is not running, a socket
 * that is root's, a file only root may write. The message keeps the original cause.
 */

/** The start commands, in the order a user is most likely to want them. */
export const HOW_TO_START =
  'start it: systemctl start corral (installed as a service by scripts/install.sh), or corral serve (in the foreground, as root), or scripts/start.sh';

/**
 * An error from a call to the daemon at `endpoint` → the message to print. grpc-js reports
 * a missing socket or nobody listening as UNAVAILABLE with the connect errno in the text.
 */
export function explainCallError(err: unknown, endpoint: string): Error {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown }).code;
  const unavailable = code === 14 || /UNAVAILABLE/.test(message);
  if (unavailable && /\b(ENOENT|ECONNREFUSED)\b/.test(message)) {
    const why = /\bENOENT\b/.test(message) ? 'there is no socket' : 'nothing listens on the socket';
    return new Error(
      `the Corral daemon is not running at ${endpoint} (${why}); ${HOW_TO_START}; or point -r/--runtime-endpoint (or CONTAINER_RUNTIME_ENDPOINT) at its socket`,
    );
  }
  if (unavailable && /\b(EACCES|EPERM)\b/.test(message)) {
    return new Error(`permission denied on ${endpoint}: the socket belongs to root (mode 0660); run as root (sudo corral ...)`);
  }
  return err instanceof Error ? err : new Error(message);
}

/** A local file-system error → its message, with "run as root" when that is the cure. */
export function explainLocalError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM' || /\b(EACCES|EPERM)\b/.test(err.message)) return `${err.message}: run as root (sudo corral ...)`;
  return err.message;
}
