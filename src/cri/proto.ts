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

/**
 * Wire bytes of frozen messages, by object. A frozen message cannot change, so neither can its
 * bytes: a handler that answers again with the same frozen object (a List item of a record
 * that did not change, see frozenMessage) has it encoded once, not on every call.
 */
const encodedFrozen = new WeakMap<object, Uint8Array>();

/**
 * A deep-frozen copy of a message object, for handlers to reuse from call to call: its
 * encoding is kept (see encodedFrozen). Nested objects are copied too, so nothing the caller
 * still holds (a record's labels) is frozen, and nothing can change it afterwards.
 */
export function frozenMessage<T extends object>(value: T): Readonly<T> {
  return deepFreeze(structuredClone(value));
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function varintBytes(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    len++;
  }
  return len;
}

function putVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[at++] = n;
  return at;
}

function encodeObject(type: Protobuf.Type, value: object): Uint8Array {
  return type.encode(type.fromObject(withoutBigInts(value) as Record<string, unknown>)).finish();
}

function serializerFor(type: Protobuf.Type): (value: object) => Buffer {
  // Repeated message fields (List answers' items): their elements are encoded one by one when
  // they are frozen, each from encodedFrozen. Protobuf readers accept fields in any order, so
  // the elements may follow the rest of the message.
  const lists = type.fieldsArray.filter((f) => f.repeated && !f.map && f.resolve().resolvedType instanceof protobuf.Type);
  return (value) => {
    value ??= {};
    let rest = value as Record<string, unknown>;
    let elements: { tag: number; bytes: Uint8Array }[] | undefined;
    for (const f of lists) {
      const list = rest[f.name];
      if (!Array.isArray(list) || list.length === 0 || !Object.isFrozen(list[0])) continue;
      if (rest === value) rest = { ...rest };
      rest[f.name] = undefined;
      const elementType = f.resolvedType as Protobuf.Type;
      const tag = f.id * 8 + 2; // length-delimited
      elements ??= [];
      for (const el of list) {
        let bytes = Object.isFrozen(el) ? encodedFrozen.get(el) : undefined;
        if (!bytes) {
          bytes = encodeObject(elementType, el);
          if (Object.isFrozen(el)) encodedFrozen.set(el, bytes);
        }
        elements.push({ tag, bytes });
      }
    }
    const head = encodeObject(type, rest);
    if (!elements) return Buffer.from(head.buffer, head.byteOffset, head.byteLength);
    let total = head.length;
    for (const e of elements) total += varintBytes(e.tag) + varintBytes(e.bytes.length) + e.bytes.length;
    const out = Buffer.allocUnsafe(total);
    out.set(head, 0);
    let at = head.length;
    for (const e of elements) {
      at = putVarint(out, at, e.tag);
      at = putVarint(out, at, e.bytes.length);
      out.set(e.bytes, at);
      at += e.bytes.length;
    }
    return out;
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
