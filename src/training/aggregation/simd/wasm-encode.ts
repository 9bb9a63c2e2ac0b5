/**
 * The few pieces of the WebAssembly binary format (core 2.0 + fixed-width SIMD) that the
 * aggregation kernels need: numbers in LEB128, sections, function types and bodies. Writing the
 * module from TypeScript keeps the kernels' source in the repository as code that is reviewed
 * and tested like the rest, with no assembler, compiler or generated binary to keep in step.
 */

/** Value types. */
export const T = { i32: 0x7f, f32: 0x7d, f64: 0x7c, v128: 0x7b } as const;

/** Core opcodes used by the kernels (one byte each). */
export const OP = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  br: 0x0c,
  brIf: 0x0d,
  ret: 0x0f,
  end: 0x0b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Const: 0x41,
  f32Const: 0x43,
  f64Const: 0x44,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i32Shl: 0x74,
  i32ShrU: 0x76,
  blockVoid: 0x40,
} as const;

/** SIMD opcodes (after the 0xfd prefix, as LEB128). */
export const SIMD = {
  load: 0x00,
  load16x4U: 0x04,
  store: 0x0b,
  shuffle: 0x0d,
  i16x8Splat: 0x10,
  i32x4Splat: 0x11,
  f32x4Splat: 0x13,
  f64x2Splat: 0x14,
  i16x8Eq: 0x2d,
  i32x4Eq: 0x37,
  i32x4GtU: 0x3c,
  and: 0x4e,
  or: 0x50,
  bitselect: 0x52,
  anyTrue: 0x53,
  f32x4DemoteF64x2Zero: 0x5e,
  f64x2PromoteLowF32x4: 0x5f,
  i32x4Shl: 0xab,
  f32x4Mul: 0xe6,
  f64x2Add: 0xf0,
  f64x2Mul: 0xf2,
} as const;

/** Unsigned LEB128. */
export function uleb(n: number): number[] {
  const out: number[] = [];
  let v = n >>> 0;
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

/** Signed LEB128 of a 32-bit integer. */
export function sleb(n: number): number[] {
  const out: number[] = [];
  let v = n | 0;
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0);
    out.push(done ? b : b | 0x80);
    if (done) return out;
  }
}

/** Instruction builders: each returns the bytes of one instruction. */
export const ins = {
  get: (i: number) => [OP.localGet, ...uleb(i)],
  set: (i: number) => [OP.localSet, ...uleb(i)],
  tee: (i: number) => [OP.localTee, ...uleb(i)],
  i32: (v: number) => [OP.i32Const, ...sleb(v)],
  f32: (v: number) => [OP.f32Const, ...new Uint8Array(Float32Array.of(v).buffer)],
  f64: (v: number) => [OP.f64Const, ...new Uint8Array(Float64Array.of(v).buffer)],
  /** A SIMD instruction without immediates. */
  simd: (op: number) => [0xfd, ...uleb(op)],
  /** A SIMD load or store with a byte offset (alignment hint 0: the kernels accept any address). */
  mem: (op: number, offset = 0) => [0xfd, ...uleb(op), 0, ...uleb(offset)],
  shuffle: (lanes: number[]) => [0xfd, ...uleb(SIMD.shuffle), ...lanes],
};

/** One exported function of a module. */
export interface FunctionDef {
  name: string;
  params: number[];
  results: number[];
  /** Extra locals after the parameters, by type. */
  locals: number[];
  /** The body's instructions, without the final `end`. */
  body: number[];
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => vec([...new TextEncoder().encode(s)].map((b) => [b]));
const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];

/**
 * A module that imports a shared memory `env.mem` (up to `maxPages` pages of 64 KiB) and exports
 * `functions`, each with a type of its own.
 */
export function encodeModule(functions: FunctionDef[], maxPages: number): Uint8Array {
  const types = functions.map((f) => [
    0x60,
    ...vec(f.params.map((t) => [t])),
    ...vec(f.results.map((t) => [t])),
  ]);
  // Limits flag 3: a minimum and a maximum, shared.
  const memImport = [...name('env'), ...name('mem'), 0x02, 0x03, ...uleb(0), ...uleb(maxPages)];
  const codes = functions.map((f) => {
    // Locals run-length encoded as (count, type) pairs; one pair per local is valid and simple.
    const body = [...vec(f.locals.map((t) => [1, t])), ...f.body, OP.end];
    return [...uleb(body.length), ...body];
  });
  const exports = functions.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]);
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec(types)),
    ...section(2, vec([memImport])),
    ...section(3, vec(functions.map((_, i) => uleb(i)))),
    ...section(7, vec(exports)),
    ...section(10, vec(codes)),
  ]);
}
