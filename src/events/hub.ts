/**
 * A transport-free publish/subscribe hub: the daemon publishes, each subscriber reads its
 * own bounded queue at its own pace.
 *
 * publish() never waits and never throws: it appends the event to every subscriber's queue.
 * A subscriber whose queue is full (it has fallen `queueLimit` events behind) is closed with
 * reason 'overflow' and its queue freed, rather than the publisher waiting for it or the
 * queue growing: one slow or stuck reader can neither block the daemon nor take its memory.
 * (containerd 1.7 drops the event instead, silently; 2.x blocks the publisher on a full
 * subscriber. A closed subscription tells its reader it missed events, so it can relist.)
 */
import { resourceExhausted } from '../errors.js';

export type CloseReason = 'unsubscribed' | 'overflow' | 'shutdown';

export interface EventHubOptions {
  /** Events a subscriber may have waiting; one more closes it ('overflow'). */
  queueLimit: number;
  /** Subscribers at once; subscribe() beyond it fails with RESOURCE_EXHAUSTED. */
  maxSubscribers: number;
}

export class EventHub<T> {
  private readonly subscriptions = new Set<Subscription<T>>();
  private closed = false;

  constructor(readonly options: EventHubOptions) {
    if (!(options.queueLimit >= 1) || !(options.maxSubscribers >= 1)) throw new Error('EventHub: queueLimit and maxSubscribers must be at least 1');
  }

  /** Queues the event for every subscriber; a subscriber with a full queue is closed instead. */
  publish(event: T): void {
    for (const sub of this.subscriptions) sub.offer(event);
  }

  /** A new subscriber, seeing every event published from now on, in order. */
  subscribe(): Subscription<T> {
    if (this.closed) throw resourceExhausted('the event hub is shut down');
    if (this.subscriptions.size >= this.options.maxSubscribers) {
      throw resourceExhausted(`too many event subscribers (at most ${this.options.maxSubscribers}); close an older subscription first`);
    }
    const sub = new Subscription<T>(this.options.queueLimit, () => this.subscriptions.delete(sub));
    this.subscriptions.add(sub);
    return sub;
  }

  /** Subscribers right now. */
  get subscriberCount(): number {
    return this.subscriptions.size;
  }

  /** Closes every subscription ('shutdown') and refuses new ones. */
  close(): void {
    this.closed = true;
    for (const sub of [...this.subscriptions]) sub.close('shutdown');
  }
}

/** One subscriber's view: an async iterator over its events, done once the subscription closes. */
export class Subscription<T> implements AsyncIterableIterator<T> {
  private queue: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | undefined;
  private reason: CloseReason | undefined;
  private readonly closedWaiters: Array<(reason: CloseReason) => void> = [];
  /** Resolves with the reason once the subscription is closed. */
  readonly closed: Promise<CloseReason>;

  /** @internal by EventHub.subscribe */
  constructor(
    private readonly limit: number,
    private readonly detach: () => void,
  ) {
    this.closed = new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  /** Why it was closed; undefined while open. */
  get closeReason(): CloseReason | undefined {
    return this.reason;
  }

  /** Events waiting to be read. */
  get pending(): number {
    return this.queue.length;
  }

  /** @internal by EventHub.publish */
  offer(event: T): void {
    if (this.reason) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: event, done: false });
      return;
    }
    if (this.queue.length >= this.limit) {
      this.close('overflow');
      return;
    }
    this.queue.push(event);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift()!, done: false });
    if (this.reason) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter) return Promise.reject(new Error('Subscription.next: already waiting (one reader per subscription)'));
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Ends the subscription: it is detached from the hub, waiting events are dropped. Idempotent. */
  close(reason: CloseReason = 'unsubscribed'): void {
    if (this.reason) return;
    this.reason = reason;
    this.queue = [];
    this.detach();
    const w = this.waiter;
    this.waiter = undefined;
    w?.({ value: undefined, done: true });
    for (const c of this.closedWaiters.splice(0)) c(reason);
  }

  /** `break` out of a for-await loop unsubscribes. */
  return(): Promise<IteratorResult<T>> {
    this.close('unsubscribed');
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
