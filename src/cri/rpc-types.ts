/** Handler signatures of the CRI services, from the generated message types. */
import type { Metadata } from '@grpc/grpc-js';
import type { ContainerEventResponseInit, GetEventsRequest, ImageServiceMethods, RuntimeServiceMethods } from '../cri-api/types.js';

/** What a handler may know of its call (grpc-js's call, narrowed). */
export interface CallInfo {
  deadline?: Date;
  metadata: Metadata;
  cancelled: boolean;
}

type HandlersOf<M> = {
  [K in keyof M]?: M[K] extends { request: infer Req; response: infer Res } ? (request: Req, call: CallInfo) => Promise<Res> : never;
};

/** RuntimeService handlers: each RPC's decoded request in, a response the encoder accepts out. */
export type RuntimeHandlers = HandlersOf<RuntimeServiceMethods>;
/** ImageService handlers. */
export type ImageHandlers = HandlersOf<ImageServiceMethods>;

/** What a server-streaming handler may do with its call. */
export interface ServerStream<Res> extends CallInfo {
  /** Sends one message; resolves once the transport can take another (backpressure), rejects once the call is over. */
  send(message: Res): Promise<void>;
  /** Aborted when the call is over for the server: the client cancelled or went away, or the daemon shuts down. */
  readonly signal: AbortSignal;
}

/** The RuntimeService server-streaming RPCs Corral serves; the other streaming RPCs answer UNIMPLEMENTED. */
export interface RuntimeStreamHandlers {
  GetContainerEvents?: (request: GetEventsRequest, stream: ServerStream<ContainerEventResponseInit>) => Promise<void>;
}
