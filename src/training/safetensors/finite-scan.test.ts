import { describe, expect, it } from 'vitest';
import { createFiniteScanner, scanMemory, sharedMemory } from './finite-scan.js';
import { firstNonFinite } from './read.js';

const memory = sharedMemory(1 << 16);
const scanner = createFiniteScanner(memory);
const bytes = new Uint8Array(memory.buffer);

// Bit patterns per dtype: finite edge cases (never flagged) and non-finite ones (always flagged).
const CASES = {
  F32: {
    size: 4,
    finite: [0x00000000, 0x80000000, 0x00000001, 0x7f7fffff, 0xff7fffff, 0x3f800000],
    bad: [0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff],
  },
  F16: {
    size: 2,
    finite: [0x0000, 0x8000, 0x0001, 0x7bff, 0xfbff, 0x3c00],
    bad: [0x7c00, 0xfc00, 0x7e00, 0x7c01],
  },
  BF16: {
    size: 2,
    finite: [0x0000, 0x8000, 0x0001, 0x7f7f, 0xff7f, 0x3f80],
    bad: [0x7f80, 0xff80, 0x7fc0, 0x7f81],
  },
} as const;

function put(at: number, size: number, bits: number): void {
  const v = new DataView(memory.buffer);
  if (size === 4) v.setUint32(at, bits >>> 0, true);
  else v.setUint16(at, bits, true);
}

describe('createFiniteScanner', () => {
  it('runs the SIMD module on this Node', () => {
    expect(scanner.simd).toBe(true);
  });

  it('runs it over an ordinary (not shared) memory too', () => {
    const own = scanMemory(1 << 16, false);
    expect(own.buffer).toBeInstanceOf(ArrayBuffer);
    const s = createFiniteScanner(own);
    expect(s.simd).toBe(true);
    const f = new Float32Array(own.buffer, 0, 1000).fill(1.5);
    expect(s.firstNonFinite(0, 4000, 'F32')).toBe(-1);
    f[777] = NaN;
    expect(s.firstNonFinite(0, 4000, 'F32')).toBe(777);
  });

  for (const [dtype, c] of Object.entries(CASES) as [
    keyof typeof CASES,
    (typeof CASES)[keyof typeof CASES],
  ][]) {
    it(`agrees with the JS loop on ${dtype} at every position, offset and length`, () => {
      for (const base of [0, 16, 36, 64 + c.size]) {
        for (const n of [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100]) {
          const len = n * c.size;
          for (let i = 0; i < n; i++) put(base + i * c.size, c.size, c.finite[i % c.finite.length]!);
          expect(scanner.firstNonFinite(base, len, dtype)).toBe(-1);
          for (let at = 0; at < n; at++) {
            const bad = c.bad[at % c.bad.length]!;
            put(base + at * c.size, c.size, bad);
            // A second bad value later: the first one is reported.
            if (at + 3 < n) put(base + (at + 3) * c.size, c.size, c.bad[0]);
            const got = scanner.firstNonFinite(base, len, dtype);
            const js = firstNonFinite(bytes.slice(base, base + len), dtype);
            expect([got, js]).toEqual([at, at]);
            for (let i = at; i < n; i++) put(base + i * c.size, c.size, c.finite[i % c.finite.length]!);
          }
        }
      }
    });
  }

  it('finds a value deep into a large range', () => {
    const n = (1 << 16) / 4;
    new Float32Array(memory.buffer).fill(0.5);
    expect(scanner.firstNonFinite(0, n * 4, 'F32')).toBe(-1);
    new Float32Array(memory.buffer)[n - 1] = -Infinity;
    expect(scanner.firstNonFinite(0, n * 4, 'F32')).toBe(n - 1);
    expect(scanner.firstNonFinite(4, (n - 2) * 4, 'F32')).toBe(-1);
  });
});
