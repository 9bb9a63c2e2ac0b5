/**
 * Set-up of bench/aggregation.ts: the built runner, the update files and the scalar JS read
 * bandwidth.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import type * as RunnerModule from '../src/training/aggregation/runner.js';
import { buildHeader, type TensorSpec } from '../src/training/safetensors/encode.js';

/** The aggregation runner module, as built in dist/. */
export type Runner = typeof RunnerModule;

/** Compiles src/ to dist/ when a source is newer than the built runner, then loads it. */
export async function builtRunner(ROOT: string, say: (s: string) => void): Promise<Runner> {
  const built = join(ROOT, 'dist/training/aggregation/runner.js');
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
      const p = join(dir, e.name);
      return Math.max(m, e.isDirectory() ? newest(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0);
    }, 0);
  if (!existsSync(built) || newest(join(ROOT, 'src')) > statSync(built).mtimeMs) {
    say('building dist/ ...');
    try {
      execFileSync(
        process.execPath,
        [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
        {
          cwd: ROOT,
          stdio: 'pipe',
        },
      );
    } catch (err) {
      if (!existsSync(built)) throw err;
    }
  }
  return (await import(pathToFileURL(built).href)) as Runner;
}

/** Writes update k: value (k + 1) + small per-element pattern, so every mean is checkable. */
export async function writeUpdate(
  path: string,
  k: number,
  dtype: 'F32' | 'BF16',
  tensors: TensorSpec[],
  elements: number,
): Promise<void> {
  const { prefix } = buildHeader(tensors);
  const fh = await open(path, 'w');
  try {
    await fh.write(prefix);
    const chunk = new Float32Array(1 << 20);
    // k + 1 + small steps: exact in bfloat16 too for k < 32 (steps of 1/8).
    for (let i = 0; i < chunk.length; i++) chunk[i] = k + 1 + (i % 7) * 0.125;
    const bytes = dtype === 'F32' ? new Uint8Array(chunk.buffer) : bf16Bytes(chunk);
    const size = dtype === 'F32' ? 4 : 2;
    for (let done = 0; done < elements; done += chunk.length) {
      const n = Math.min(chunk.length, elements - done);
      await fh.write(bytes.subarray(0, n * size));
    }
    // On disk before any measurement: otherwise the first finish's fsync waits behind the
    // writeback of gigabytes of update files and is timed as aggregation.
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function bf16Bytes(values: Float32Array): Uint8Array {
  const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = u32[i]! >>> 16; // exact for these values
  return new Uint8Array(out.buffer);
}

/** Single-thread read bandwidth of a scalar JS loop: sum of a 1 GiB Float64Array (best of 3). */
export function jsReadBandwidth(): number {
  const a = new Float64Array(2 ** 27);
  for (let i = 0; i < a.length; i++) a[i] = i & 1023;
  let best = 0;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now();
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i]!;
    const sec = (performance.now() - t0) / 1000;
    if (s < 0) console.log(s); // keeps the loop from being optimised away
    best = Math.max(best, a.byteLength / sec);
  }
  return best;
}
