// grpc-js clients for Corral's CRI socket (for the CLI and tests).

import * as grpc from '@grpc/grpc-js';
import { imageServiceDefinition, runtimeServiceDefinition, type ImageRpcName, type RuntimeRpcName } from './proto.js';

export interface CriClientOptions {
  /** How long to wait for the connection when a call starts; default 10 s. Applies through call()'s default deadline. */
  timeoutMs?: number;
}

const RuntimeClient = grpc.makeGenericClientConstructor(runtimeServiceDefinition, 'RuntimeService');
const ImageClient = grpc.makeGenericClientConstructor(imageServiceDefinition, 'ImageService');

const DEFAULT_TIMEOUT_MS = 10_000;
const timeouts = new WeakMap<grpc.Client, number>();

/** "unix:///run/corral/corral.sock", "unix:/run/x.sock" or a bare path → a grpc-js target. */
export function endpointToTarget(endpoint: string): string {
  if (endpoint.startsWith('unix://')) return 'unix://' + endpoint.slice('unix://'.length).replace(/^\/*/, '/');
  if (endpoint.startsWith('unix:')) return 'unix://' + endpoint.slice('unix:'.length).replace(/^\/*/, '/');
  if (endpoint.startsWith('/')) return 'unix://' + endpoint;
  if (/^[a-z][a-z0-9+.-]*:/i.test(endpoint)) return endpoint;
  return 'unix://' + endpoint; // relative path; grpc-js resolves it against the working directory
}

function makeClient(Ctor: grpc.ServiceClientConstructor, socketPath: string, opts: CriClientOptions): grpc.Client {
  const client = new Ctor(endpointToTarget(socketPath), grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    'grpc.max_send_message_length': 16 * 1024 * 1024,
  });
  timeouts.set(client, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  return client;
}

/** A client of runtime.v1.RuntimeService on the socket (close it with client.close()). */
export function createRuntimeClient(socketPath: string, opts: CriClientOptions = {}): grpc.Client {
  return makeClient(RuntimeClient, socketPath, opts);
}

/** A client of runtime.v1.ImageService on the socket (close it with client.close()). */
export function createImageClient(socketPath: string, opts: CriClientOptions = {}): grpc.Client {
  return makeClient(ImageClient, socketPath, opts);
}

export interface CallOptions {
  /** Deadline of this call in ms from now; default the client's timeoutMs. */
  deadlineMs?: number;
  metadata?: grpc.Metadata;
}

/**
 * Make one unary call and return the response object (int64 as decimal strings, enums
 * as names). Rejects with the grpc-js ServiceError (it has .code and .details).
 */
export function call<T = any>(client: grpc.Client, method: RuntimeRpcName | ImageRpcName, request: object = {}, opts: CallOptions = {}): Promise<T> {
  const fn = (client as any)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`corral: this client has no method ${method}`));
  const ms = opts.deadlineMs ?? timeouts.get(client) ?? DEFAULT_TIMEOUT_MS;
  return new Promise<T>((resolve, reject) => {
    fn.call(client, request, opts.metadata ?? new grpc.Metadata(), { deadline: Date.now() + ms }, (err: grpc.ServiceError | null, res: T) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}
