import { readFileSync } from 'node:fs';

/**
 * The bytes of a WebAssembly module assembled at build time from its `.wat` source
 * (scripts/build-wasm.ts writes `X.wasm` beside `X.wat`, in src/ and dist/). `url` is resolved
 * against the caller's `import.meta.url`.
 */
export function wasmModuleBytes(url: URL): Uint8Array {
  try {
    return readFileSync(url);
  } catch (err) {
    throw new Error(`${url.pathname} is missing: run \`npm run build\` (it assembles the .wat kernels)`, {
      cause: err,
    });
  }
}
