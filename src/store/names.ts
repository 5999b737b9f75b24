/**
 * Pod name reservations. A name (metadata name, namespace, uid, attempt) belongs to one
 * sandbox at a time. While a sandbox is being created its entry carries the creation's
 * promise, so a kubelet retry after a client-side deadline waits for the same creation
 * and gets the same ID, instead of failing with "name is reserved" forever.
 */
export interface Reservation {
  id: string;
  /** Settles when the creation that holds the name finishes; absent once created. */
  creation?: Promise<string>;
}

export class NameRegistry {
  private readonly byName = new Map<string, Reservation>();

  get(name: string): Reservation | undefined {
    return this.byName.get(name);
  }

  /** Reserves name for id; returns the existing reservation instead when the name is taken. */
  reserve(name: string, id: string, creation?: Promise<string>): Reservation | undefined {
    const existing = this.byName.get(name);
    if (existing) return existing;
    this.byName.set(name, creation ? { id, creation } : { id });
    return undefined;
  }

  /** Marks the creation done: later lookups return the ID without waiting. */
  settle(name: string, id: string): void {
    const r = this.byName.get(name);
    if (r && r.id === id) this.byName.set(name, { id });
  }

  /** Frees the name, only if it still belongs to id. */
  release(name: string, id: string): void {
    if (this.byName.get(name)?.id === id) this.byName.delete(name);
  }

  size(): number {
    return this.byName.size;
  }
}

/** The displayed name, containerd-style: name_namespace_uid_attempt (ambiguous: fields may contain `_`). */
export function sandboxName(meta: { name: string; namespace: string; uid: string; attempt: number }): string {
  return [meta.name, meta.namespace, meta.uid, String(meta.attempt)].join('_');
}

/**
 * The reservation key: the same tuple, structured. Joined with `_`, pod `a_b` in namespace
 * `c` and pod `a` in namespace `b_c` would share one name; as JSON they never do.
 */
export function sandboxNameKey(meta: { name: string; namespace: string; uid: string; attempt: number }): string {
  return JSON.stringify(['sandbox', meta.name, meta.namespace, meta.uid, Number(meta.attempt)]);
}

/** A container's displayed name, kubelet-style: name_podName_podNamespace_podUid_attempt. */
export function containerName(name: string, pod: { name: string; namespace: string; uid: string }, attempt: number): string {
  return [name, pod.name, pod.namespace, pod.uid, String(attempt)].join('_');
}

/** A container's reservation key: the tuple of containerName, structured (see sandboxNameKey). */
export function containerNameKey(name: string, pod: { name: string; namespace: string; uid: string }, attempt: number): string {
  return JSON.stringify(['container', name, pod.name, pod.namespace, pod.uid, Number(attempt)]);
}
