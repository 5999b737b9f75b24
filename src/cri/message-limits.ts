// Bounding what one request message can cost once decoded.
//
// The byte size of a message is capped by grpc-js (16 MiB), but its decoded size is not:
// protobufjs builds one object per element and toObject({ defaults: true }) fills every
// field of each, so a 2-byte empty `Mount` becomes ~170 bytes of heap: a 16 MiB
// CreateContainer with 8 million empty mounts would take over a gigabyte and seconds of CPU.
// Before decoding, Corral walks the wire format with the schema and counts elements (every
// field occurrence, nested messages walked, packed numbers counted one by one); a request
// over the limit is refused without being decoded.

import protobuf from 'protobufjs';
import type * as Protobuf from 'protobufjs';

/** Most elements one request may hold; kubelet's largest (a CreateContainer with thousands of env vars) stays far below. */
export const MAX_REQUEST_ELEMENTS = 100_000;

const FIXED32 = new Set(['fixed32', 'sfixed32', 'float']);
const FIXED64 = new Set(['fixed64', 'sfixed64', 'double']);
const PACKABLE = new Set(['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'bool', 'enum', ...FIXED32, ...FIXED64]);

/**
 * Counts the elements of an encoded message of `type`, stopping as soon as the count passes
 * `limit`. Malformed wire data ends the walk early (the decoder reports it afterwards). No
 * recursion: a stack of nested-message ends, so hostile nesting cannot overflow the call stack.
 */
export function countWireElements(type: Protobuf.Type, bytes: Uint8Array, limit: number): number {
  let pos = 0;
  let count = 0;
  const stack: Array<{ type: Protobuf.Type | null; end: number }> = [{ type, end: bytes.length }];
  const varint = (): number | undefined => {
    let value = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (pos >= bytes.length) return undefined;
      const b = bytes[pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    return undefined;
  };
  while (stack.length) {
    const frame = stack[stack.length - 1]!;
    if (pos >= frame.end) {
      stack.pop();
      continue;
    }
    const tag = varint();
    if (tag === undefined) return count;
    if (++count > limit) return count;
    const wireType = tag % 8;
    const field = frame.type?.fieldsById[Math.floor(tag / 8)];
    switch (wireType) {
      case 0:
        if (varint() === undefined) return count;
        break;
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        const len = varint();
        if (len === undefined || pos + len > frame.end) return count;
        const resolved = field?.resolvedType;
        if (field && field.map) {
          stack.push({ type: null, end: pos + len }); // an entry: its key and value fields count
        } else if (resolved instanceof protobuf.Type) {
          stack.push({ type: resolved, end: pos + len });
        } else {
          if (field?.repeated && (PACKABLE.has(field.type) || resolved instanceof protobuf.Enum)) {
            // Packed numbers: one element per number (fixed sizes exact, varints at most one per byte).
            count += FIXED32.has(field.type) ? len / 4 : FIXED64.has(field.type) ? len / 8 : len;
            if (count > limit) return count;
          }
          pos += len;
        }
        break;
      }
      case 3:
      case 4:
        break; // group markers (deprecated): their fields are counted as they come
      default:
        return count;
    }
  }
  return count;
}
