/**
 * GetContainerEvents: one hub subscription per call, each event sent as containerd builds it
 * (the container's or sandbox's ID, the type, when, the pod's status and its containers'
 * statuses). The statuses are those of the records the event was published with, so a late
 * reader still sees the pod as it was at the event; only the sandbox's READY is checked live.
 *
 * A reader that falls EVENT_QUEUE_LIMIT events behind loses its subscription and the call
 * ends RESOURCE_EXHAUSTED (a client that stopped reading has its stream reset by the server):
 * it must subscribe again and relist, which is what kubelet's evented PLEG does on an error.
 */
import type { ContainerService } from '../container/service.js';
import type { SandboxService } from '../sandbox/service.js';
import type { EventHub } from '../events/hub.js';
import type { LifecycleEvent, LifecycleEventType } from '../events/lifecycle.js';
import type { ContainerEventResponseInit, ContainerEventType } from '../cri-api/types.js';
import { resourceExhausted, unavailable } from '../errors.js';
import { containerStatusOf } from './container-rpc.js';
import { podSandboxStatusOf } from './sandbox-rpc.js';
import type { RuntimeStreamHandlers } from './rpc-types.js';

const CRI_EVENT_TYPE: Record<LifecycleEventType, ContainerEventType> = {
  created: 'CONTAINER_CREATED_EVENT',
  started: 'CONTAINER_STARTED_EVENT',
  stopped: 'CONTAINER_STOPPED_EVENT',
  deleted: 'CONTAINER_DELETED_EVENT',
};

/** The CRI message of one event. */
export async function containerEventResponse(
  event: LifecycleEvent,
  sandboxes: Pick<SandboxService, 'liveState'>,
  containers: Pick<ContainerService, 'linuxResourcesOf'>,
): Promise<ContainerEventResponseInit> {
  const sb = event.sandbox;
  return {
    containerId: event.containerId,
    containerEventType: CRI_EVENT_TYPE[event.type],
    createdAt: event.at,
    // A ready record is READY only while its pause (or pins) still hold the namespaces.
    podSandboxStatus: sb ? podSandboxStatusOf(sb, sb.state === 'ready' ? await sandboxes.liveState(sb) : 'SANDBOX_NOTREADY') : null,
    containersStatuses: event.containers.map((r) => containerStatusOf(containers, r)),
  };
}

export function eventsHandlers(hub: EventHub<LifecycleEvent>, sandboxes: Pick<SandboxService, 'liveState'>, containers: Pick<ContainerService, 'linuxResourcesOf'>) {
  return {
    async GetContainerEvents(_req, stream) {
      const sub = hub.subscribe();
      const unsubscribe = () => sub.close('unsubscribed');
      stream.signal.addEventListener('abort', unsubscribe, { once: true });
      try {
        for await (const event of sub) {
          const message = await containerEventResponse(event, sandboxes, containers);
          // Waits while the client's flow control holds messages back; the subscription
          // closing meanwhile (overflow: this reader is too far behind) ends the wait.
          await Promise.race([stream.send(message), sub.closed]);
        }
      } catch (e) {
        if (stream.signal.aborted) return; // the client went away, or shutdown: the server answers
        throw e;
      } finally {
        stream.signal.removeEventListener('abort', unsubscribe);
        sub.close('unsubscribed');
      }
      if (sub.closeReason === 'overflow') {
        throw resourceExhausted(
          `this GetContainerEvents subscriber fell more than ${hub.options.queueLimit} events behind and was dropped; events since were lost: subscribe again and relist`,
        );
      }
      if (sub.closeReason === 'shutdown') throw unavailable('corral is shutting down');
    },
  } satisfies RuntimeStreamHandlers;
}
