// Regenerates src/cri-api/types.ts from proto/runtime/v1/api.proto: `npm run gen:types`.
// `--out <dir>` writes types.ts there instead (the staleness test compares the two).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { IMAGE_SERVICE, PROTO_PACKAGE, REQUEST_OBJECT, RUNTIME_SERVICE, protoRoot } from '../src/cri/proto.js';
import { generateCriTypes } from '../src/cri/type-gen.js';
import { packageRoot } from '../src/util/paths.js';

const { values } = parseArgs({ options: { out: { type: 'string' } } });
const outDir = values.out ?? path.join(packageRoot(), 'src', 'cri-api');
const services = [RUNTIME_SERVICE, IMAGE_SERVICE].map((s) => s.slice(PROTO_PACKAGE.length + 1));
mkdirSync(outDir, { recursive: true });
const file = path.join(outDir, 'types.ts');
writeFileSync(file, generateCriTypes(protoRoot(), PROTO_PACKAGE, REQUEST_OBJECT, services));
console.log(`wrote ${file}`);
