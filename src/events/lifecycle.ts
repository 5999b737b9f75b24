/**
 * Lifecycle events of containers and pod sandboxes, as the sandbox and container services
 * publish them once a state change is committed (written to disk, then in memory). Each
 * carries the pod's records as of that moment: records are replaced, never mutated, so
 * holding them is a snapshot at no copying cost.
 *
 * As containerd sends them: a sandbox has CREATED and STARTED when Run finishes, STOPPED
 * when Stop takes it from ready to not ready, DELETED when removed, all with the sandbox's
 * ID as the container ID; a container has CREATED, STARTED, STOPPED (Stop, a failed start,
 * or an exit conmon recorded) and DELETED.
 */
import type { ContainerRecord } from '../container/record.js';
import type { SandboxRecord } from '../sandbox/record.js';
import { EventHub } from './hub.js';

export type LifecycleEventType = 'created' | 'started' | 'stopped' | 'deleted';

export interface LifecycleEvent {
  type: LifecycleEventType;
  /** The container's ID; the sandbox's own ID for an event of the sandbox. */
  containerId: string;
  sandboxId: string;
  /** When it was committed, in ns since the epoch (decimal, as records keep times). */
  at: string;
  /** The pod's record as of the event (the last one, for its DELETED); undefined if there is none. */
  sandbox: SandboxRecord | undefined;
  /** The records of the pod's containers as of the event (a DELETED container is no longer among them). */
  containers: readonly ContainerRecord[];
}

/** Where the services publish; the daemon gives them a hub, tests whatever they like. */
export interface LifecyclePublisher {
  publish(event: LifecycleEvent): void;
}

/** The default publisher of a service nobody listens to. */
export const NO_LIFECYCLE_EVENTS: LifecyclePublisher = { publish: () => {} };

/**
 * Per-subscriber queue: a burst (a node starting many pods at once) fits, a reader that stops
 * reading is closed after this many events. containerd 2.x gives each subscriber a 100-event channel.
 */
export const EVENT_QUEUE_LIMIT = 256;
/** Kubelet keeps one subscription; this bounds what many clients can pin (limit × queue). */
export const MAX_EVENT_SUBSCRIBERS = 64;

export function lifecycleHub(): EventHub<LifecycleEvent> {
  return new EventHub<LifecycleEvent>({ queueLimit: EVENT_QUEUE_LIMIT, maxSubscribers: MAX_EVENT_SUBSCRIBERS });
}
