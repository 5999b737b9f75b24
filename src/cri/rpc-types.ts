/** Handler signatures of the CRI services, from the generated message types. */
import type { Metadata } from '@grpc/grpc-js';
import type { ImageServiceMethods, RuntimeServiceMethods } from '../cri-api/types.js';

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
