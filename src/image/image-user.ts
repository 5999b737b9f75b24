/**
 * What ImageStatus reports of an image's configured user: a numeric uid when the user
 * part of `config.User` is a number, else a username. The group part is not reported.
 * An empty user reports neither (kubelet then treats the image as running as root).
 */
export function imageUser(user: string | undefined): { uid?: number; username: string } {
  const name = (user ?? '').split(':', 1)[0]!.trim();
  if (name === '') return { username: '' };
  if (/^[0-9]+$/.test(name)) return { uid: Number(name), username: '' };
  return { username: name };
}
