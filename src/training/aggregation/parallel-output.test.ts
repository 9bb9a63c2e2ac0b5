import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIGEST_PIECE_BYTES, PieceDigest } from '../safetensors/digest.js';
import type { AggregatableDtype } from '../safetensors/dtypes.js';
import { buildHeader } from '../safetensors/encode.js';
import { FlatOutput } from './flat-output.js';
import { chunkRanges, flatLayout, type FlatLayout } from './layout.js';
import { outputHeader, outputParts, writeInParts, writePart } from './parallel-output.js';

// The parallel writer against the sequential one (flat-output.ts): the same file, byte for byte,
// and the same digest, whatever the number of parts, over several digest pieces with part
// boundaries that fall inside an element (an F32 tensor after an odd-length F16 one).

let dir: string;
let layout: FlatLayout;
let sum: Float64Array;
const TOTAL_WEIGHT = 3;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'parallel-output-'));
  const shapes: [string, AggregatableDtype, number][] = [
    ['a', 'F16', 1_000_001],
    ['b', 'F32', 2_500_003],
    ['c', 'BF16', 777_777],
    ['d', 'F32', 5],
  ];
  const { header } = buildHeader(
    shapes.map(([name, dtype, n]) => ({ name, dtype, shape: [n] })),
    { note: 'x' },
  );
  const built = flatLayout(header);
  if (!built.ok) throw new Error(built.message);
  layout = built.layout;
  sum = Float64Array.from(
    { length: layout.totalElements },
    (_, i) => Math.sin(i * 0.01) * 10 ** ((i % 11) - 5),
  );
  // NaN and the infinities travel through too.
  sum[12] = NaN;
  sum[1_000_003] = Infinity;
  sum[3_600_000] = -Infinity;
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function sequential(path: string) {
  const out = await FlatOutput.create(path, layout);
  const scratch = new Float32Array(1 << 18);
  for (const [start, end] of chunkRanges(layout, scratch.length)) {
    for (let i = start; i < end; i++) scratch[i - start] = sum[i]! / TOTAL_WEIGHT;
    await out.write(start, scratch.subarray(0, end - start));
  }
  return out.close();
}

describe('writeInParts', () => {
  it('splits the output on digest pieces, cutting no element', () => {
    const { header: out } = outputHeader(layout);
    expect(out.fileBytes).toBeGreaterThan(3 * DIGEST_PIECE_BYTES);
    for (const threads of [1, 2, 3, 7]) {
      const parts = outputParts(layout, out, threads);
      expect(parts).toHaveLength(threads);
      expect(parts[0]!.from).toBe(0);
      expect(parts.at(-1)!.to).toBe(layout.totalElements);
      parts.forEach((p, i) => i > 0 && expect(p.from).toBe(parts[i - 1]!.to));
    }
  });

  for (const threads of [1, 2, 3, 7]) {
    it(`writes the sequential writer's file and digest with ${threads} part(s)`, async () => {
      const want = await sequential(join(dir, `seq-${threads}.st`));
      const path = join(dir, `par-${threads}.st`);
      const scratch = new Float32Array(100_003);
      const got = await writeInParts(path, layout, undefined, threads, async (tmpPath, out, parts) =>
        parts.map((part) =>
          writePart(layout, out, part, tmpPath, scratch.length, (at, n) => {
            for (let i = 0; i < n; i++) scratch[i] = sum[at + i]! * (1 / TOTAL_WEIGHT);
            return scratch.subarray(0, n);
          }),
        ),
      );
      const [a, b] = [await readFile(want.path), await readFile(got.path)];
      expect(b.equals(a)).toBe(true);
      expect(got.digest).toBe(want.digest);
      expect(got.digest).toBe(new PieceDigest().update(b).digest());
      expect(got.bytes).toBe(a.length);
    });
  }
});
