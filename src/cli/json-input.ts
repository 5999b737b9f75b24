/**
 * crictl's JSON/YAML inputs use the proto field names (snake_case); grpc objects here use
 * camelCase. Keys inside map fields (labels, annotations, sysctls) are data, not field
 * names, and are kept as they are.
 */
const MAP_FIELDS = new Set(['labels', 'annotations', 'sysctls']);

export function toCamelCaseFields(value: unknown, inMap = false): unknown {
  if (Array.isArray(value)) return value.map((v) => toCamelCaseFields(v));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (inMap) {
      out[key] = v;
      continue;
    }
    const camel = key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    out[camel] = toCamelCaseFields(v, MAP_FIELDS.has(key) || MAP_FIELDS.has(camel));
  }
  return out;
}
