// Loading Corral's CRI v1 schema (proto/runtime/v1/api.proto) for grpc-js.
//
// The schema is parsed once, at import time, with protobufjs, and the grpc-js service
// definitions are built directly from the parsed services. @grpc/proto-loader would
// also build a FileDescriptorProto (for reflection) and a descriptor object for all
// ~190 message types, which costs two to three times as much as parsing on a small
// node, and Corral needs neither. See REQUEST_OBJECT / RESPONSE_OBJECT for the
// conversion options.
//
// int64 representation:
//   * requests decoded by the server (what handlers receive): JS numbers, so
//     fields like `timeout` can be used directly (`req.timeout || 10`). Exact up
//     to 2^53, which covers every int64 a kubelet sends (timeouts, byte limits,
//     uids, CPU shares/quotas).
//   * responses decoded by the client (CLI, tests): decimal strings, so
//     nanosecond timestamps such as `createdAt` keep full precision.
//   * when encoding (handler results, client requests), an int64 may be given
//     as a number, a decimal string or a bigint.

import protobuf from 'protobufjs';
import type * as Protobuf from 'protobufjs';
import * as grpc from '@grpc/grpc-js';
import { protoFile } from '../util/paths.js';

export const PROTO_PACKAGE = 'runtime.v1';
export const RUNTIME_SERVICE = `${PROTO_PACKAGE}.RuntimeService`;
export const IMAGE_SERVICE = `${PROTO_PACKAGE}.ImageService`;

/** Every RPC of runtime.v1.RuntimeService, in schema order (a unit test keeps this in step with the proto). */
export const RUNTIME_RPCS = [
  'Version', 'RunPodSandbox', 'StopPodSandbox', 'RemovePodSandbox', 'PodSandboxStatus', 'ListPodSandbox',
  'StreamPodSandboxes', 'CreateContainer', 'StartContainer', 'StopContainer', 'RemoveContainer', 'ListContainers',
  'StreamContainers', 'ContainerStatus', 'UpdateContainerResources', 'ReopenContainerLog', 'ExecSync', 'Exec',
  'Attach', 'PortForward', 'ContainerStats', 'ListContainerStats', 'StreamContainerStats', 'PodSandboxStats',
  'ListPodSandboxStats', 'StreamPodSandboxStats', 'UpdateRuntimeConfig', 'Status', 'CheckpointContainer',
  'CheckpointPod', 'RestorePod', 'GetContainerEvents', 'ListMetricDescriptors', 'ListPodSandboxMetrics',
  'StreamPodSandboxMetrics', 'RuntimeConfig', 'UpdatePodSandboxResources',
] as const;

/** Every RPC of runtime.v1.ImageService, in schema order. */
export const IMAGE_RPCS = ['ListImages', 'StreamImages', 'ImageStatus', 'PullImage', 'RemoveImage', 'ImageFsInfo'] as const;

export type RuntimeRpcName = (typeof RUNTIME_RPCS)[number];
export type ImageRpcName = (typeof IMAGE_RPCS)[number];

/** toObject options for messages the server receives (requests); src/cri-api/types.ts is generated from them. */
export const REQUEST_OBJECT: Protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true };
/** toObject options for messages the client receives (responses). */
const RESPONSE_OBJECT: Protobuf.IConversionOptions = { longs: String, enums: String, defaults: true, oneofs: true };


/** bigint → decimal string, recursively, copying only objects that contain a bigint. */
function withoutBigInts(value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value) || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v = withoutBigInts(value[i]);
      if (v !== value[i]) (out ??= value.slice())[i] = v;
    }
    return out ?? value;
  }
  let out: Record<string, unknown> | undefined;
  for (const [k, v0] of Object.entries(value as Record<string, unknown>)) {
    const v = withoutBigInts(v0);
    if (v !== v0) (out ??= { ...(value as Record<string, unknown>) })[k] = v;
  }
  return out ?? value;
}

function serializerFor(type: Protobuf.Type): (value: object) => Buffer {
  return (value) => {
    const message = type.fromObject(withoutBigInts(value ?? {}) as Record<string, unknown>);
    return Buffer.from(type.encode(message).finish());
  };
}

function deserializerFor(type: Protobuf.Type, options: Protobuf.IConversionOptions): (bytes: Buffer) => any {
  return (bytes) => type.toObject(type.decode(bytes), options);
}

function serviceDefinition(root: Protobuf.Root, fullName: string): grpc.ServiceDefinition {
  const service = root.lookupService(fullName);
  const def: Record<string, grpc.MethodDefinition<any, any>> = {};
  for (const method of service.methodsArray) {
    const req = root.lookupType(method.requestType);
    const res = root.lookupType(method.responseType);
    const name = method.name;
    def[name] = {
      path: `/${fullName}/${name}`,
      requestStream: !!method.requestStream,
      responseStream: !!method.responseStream,
      requestSerialize: serializerFor(req),
      requestDeserialize: deserializerFor(req, REQUEST_OBJECT),
      responseSerialize: serializerFor(res),
      responseDeserialize: deserializerFor(res, RESPONSE_OBJECT),
      originalName: name.charAt(0).toLowerCase() + name.slice(1),
    } as grpc.MethodDefinition<any, any>;
  }
  return def as grpc.ServiceDefinition;
}

const loadStarted = performance.now();
const root: Protobuf.Root = new protobuf.Root().loadSync(protoFile(), { keepCase: false });

/** grpc-js definition of runtime.v1.RuntimeService. */
export const runtimeServiceDefinition: grpc.ServiceDefinition = serviceDefinition(root, RUNTIME_SERVICE);
/** grpc-js definition of runtime.v1.ImageService. */
export const imageServiceDefinition: grpc.ServiceDefinition = serviceDefinition(root, IMAGE_SERVICE);

/** A grpc-js package definition with both services, as proto-loader would have produced (services only). */
export const packageDefinition: Parameters<typeof grpc.loadPackageDefinition>[0] = {
  [RUNTIME_SERVICE]: runtimeServiceDefinition,
  [IMAGE_SERVICE]: imageServiceDefinition,
};

/** How long parsing the schema and building the definitions took, in ms (for start-up diagnostics). */
export const protoLoadMs = performance.now() - loadStarted;

let pkg: grpc.GrpcObject | undefined;
/** The grpc-js package object: `criPackage().runtime.v1.RuntimeService` is a client constructor. */
export function criPackage(): grpc.GrpcObject {
  return (pkg ??= grpc.loadPackageDefinition(packageDefinition));
}

/** A message type of the schema by name ("VersionResponse" or "runtime.v1.VersionResponse"); for tests and tools. */
export function messageType(name: string): Protobuf.Type {
  return root.lookupType(name.includes('.') ? name : `${PROTO_PACKAGE}.${name}`);
}

/** Encode a plain object as the named message (int64 as number, string or bigint; enums by name). */
export function encodeMessage(name: string, value: object): Buffer {
  return serializerFor(messageType(name))(value);
}

/** Decode the named message the way a client sees it (int64 as decimal strings, enums by name, defaults filled in). */
export function decodeMessage(name: string, bytes: Uint8Array): any {
  const type = messageType(name);
  return type.toObject(type.decode(bytes), RESPONSE_OBJECT);
}

/** The parsed protobufjs root, for anything that needs the reflection objects. */
export function protoRoot(): Protobuf.Root {
  return root;
}
