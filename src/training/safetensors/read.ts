/**
 * Reading safetensors: the header from a file, the body as a stream of whole-element segments
 * (constant memory), full decoding to float32 for tests and small models, and a streaming
 * NaN/Inf scan.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { dtypeSize, type Dtype } from './dtypes.js';
import { bf16ToF32, f16ToF32 } from './half.js';
import {
  parseHeader,
  peekHeaderLength,
  type HeaderFailure,
  type ParseHeaderOptions,
  type ParseHeaderResult,
  type SafetensorsHeader,
  type TensorInfo,
} from './header.js';

/** Default size of one body read: 4 MiB, big enough to amortise syscalls, small enough for caches. */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;

/** Reads exactly `length` bytes at `position` (fewer only at end of file). */
export async function readAt(
  fh: FileHandle,
  dst: Uint8Array,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(dst, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Reads and validates the header of an open file. */
export async function readHeaderFrom(
  fh: FileHandle,
  options: ParseHeaderOptions = {},
): Promise<ParseHeaderResult> {
  const { size } = await fh.stat();
  const first = new Uint8Array(8);
  await readAt(fh, first, 8, 0);
  const peek = peekHeaderLength(first, size, options);
  if (!peek.ok) return peek;
  const prefix = new Uint8Array(peek.prefixBytes);
  await readAt(fh, prefix, peek.prefixBytes, 0);
  return parseHeader(prefix, size, options);
}

/** Reads and validates the header of the file at `path`. */
export async function readHeaderFile(
  path: string,
  options: ParseHeaderOptions = {},
): Promise<ParseHeaderResult> {
  const fh = await open(path, 'r');
  try {
    return await readHeaderFrom(fh, options);
  } finally {
    await fh.close();
  }
}

/** A run of whole elements of one tensor; `bytes` is only valid until the next segment is pulled. */
export interface BodySegment {
  tensor: TensorInfo;
  /** Index (within the tensor) of the first element in `bytes`. */
  firstElement: number;
  bytes: Uint8Array;
}

/**
 * Streams the body of an open file sequentially in chunks of about `chunkBytes`, as segments
 * that never split an element (a chunk is cut back to the last whole element, and the next
 * chunk starts there). One buffer is reused (`buffer` when given, at least 8 bytes, then its
 * length is the chunk size), so memory stays at one chunk.
 */
export async function* bodySegments(
  fh: FileHandle,
  header: SafetensorsHeader,
  chunkBytes: number = DEFAULT_CHUNK_BYTES,
  buffer?: Uint8Array,
): AsyncGenerator<BodySegment> {
  const buf = buffer ?? new Uint8Array(Math.max(8, Math.min(chunkBytes, header.bufferBytes)));
  if (buf.length < 8) throw new RangeError('body buffer must hold at least 8 bytes');
  const size = buf.length;
  const tensors = header.tensors.filter((t) => t.end > t.begin);
  let ti = 0;
  let pos = 0;
  while (ti < tensors.length) {
    const end = Math.min(pos + size, header.bufferBytes);
    const got = await readAt(fh, buf, end - pos, header.dataStart + pos);
    if (got !== end - pos) throw new Error(`file shorter than its header declares (at ${pos + got})`);
    let next = end;
    while (ti < tensors.length) {
      const t = tensors[ti]!;
      const es = dtypeSize(t.dtype);
      const segStart = Math.max(pos, t.begin);
      let segEnd = Math.min(end, t.end);
      if (segEnd < t.end) {
        segEnd = segStart + Math.floor((segEnd - segStart) / es) * es;
        next = segEnd; // resume at the first element this chunk could not hold whole
      }
      if (segEnd > segStart) {
        const firstElement = (segStart - t.begin) / es;
        yield { tensor: t, firstElement, bytes: buf.subarray(segStart - pos, segEnd - pos) };
      }
      if (segEnd < t.end) break;
      ti++;
    }
    pos = next;
  }
}

/** `bytes` itself when its offset suits a typed-array view of `elementSize`, else an aligned copy. */
export function aligned(bytes: Uint8Array, elementSize: number): Uint8Array {
  // new Uint8Array(typedArray) copies (Buffer#slice would not).
  return bytes.byteOffset % elementSize === 0 ? bytes : new Uint8Array(bytes);
}

/** float8 E4M3 (the "fn" variant: bias 7, no Inf, NaN at S.1111.111) to a number. */
function e4m3ToNumber(b: number): number {
  const s = b & 0x80 ? -1 : 1;
  const e = (b >> 3) & 0xf;
  const m = b & 7;
  if (e === 0xf && m === 7) return NaN;
  return e === 0 ? s * m * 2 ** -9 : s * (1 + m / 8) * 2 ** (e - 7);
}

/**
 * Decodes the bytes of whole elements of any dtype to float32 into `dst` at `dstOffset`
 * (integers are converted with rounding, as a cast would). F32/F16/BF16 take the fast paths.
 */
export function decodeToF32(bytes: Uint8Array, dtype: Dtype, dst: Float32Array, dstOffset = 0): void {
  const b = aligned(bytes, dtypeSize(dtype));
  const n = b.length / dtypeSize(dtype);
  const out = dst.subarray(dstOffset, dstOffset + n);
  const { buffer, byteOffset } = b;
  switch (dtype) {
    case 'F32':
      return out.set(new Float32Array(buffer, byteOffset, n));
    case 'F16':
      f16ToF32(new Uint16Array(buffer, byteOffset, n), out);
      return;
    case 'BF16':
      bf16ToF32(new Uint16Array(buffer, byteOffset, n), out);
      return;
    case 'F64':
      return out.set(new Float64Array(buffer, byteOffset, n));
    case 'F8_E5M2':
      // E5M2 is the top byte of a float16.
      f16ToF32(
        Uint16Array.from(b, (x) => x << 8),
        out,
      );
      return;
    case 'F8_E4M3':
      for (let i = 0; i < n; i++) out[i] = e4m3ToNumber(b[i]!);
      return;
    case 'BOOL':
    case 'U8':
      return out.set(b);
    case 'I8':
      return out.set(new Int8Array(buffer, byteOffset, n));
    case 'I16':
      return out.set(new Int16Array(buffer, byteOffset, n));
    case 'U16':
      return out.set(new Uint16Array(buffer, byteOffset, n));
    case 'I32':
      return out.set(new Int32Array(buffer, byteOffset, n));
    case 'U32':
      return out.set(new Uint32Array(buffer, byteOffset, n));
    case 'I64': {
      const v = new BigInt64Array(buffer, byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]!);
      return;
    }
    case 'U64': {
      const v = new BigUint64Array(buffer, byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]!);
      return;
    }
  }
}

/** Index of the first NaN/Inf element in float bytes of `dtype`, -1 if none (or not a float dtype). */
export function firstNonFinite(bytes: Uint8Array, dtype: Dtype): number {
  const b = aligned(bytes, dtypeSize(dtype));
  // Bit tests on the exponent field: no conversion needed, and exact for every payload.
  if (dtype === 'F32') {
    const u = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
    for (let i = 0; i < u.length; i++) if ((u[i]! & 0x7f800000) === 0x7f800000) return i;
  } else if (dtype === 'F16' || dtype === 'BF16') {
    const mask = dtype === 'F16' ? 0x7c00 : 0x7f80;
    const u = new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
    for (let i = 0; i < u.length; i++) if ((u[i]! & mask) === mask) return i;
  } else if (dtype === 'F64') {
    const u = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
    for (let i = 1; i < u.length; i += 2) if ((u[i]! & 0x7ff00000) === 0x7ff00000) return (i - 1) / 2;
  }
  return -1;
}

/** Result of {@link scanFinite}. */
export type ScanFiniteResult =
  | { ok: true; bytesRead: number }
  | { ok: false; code: 'non_finite'; message: string; tensor: string; element: number; bytesRead: number };

/**
 * Streams the body of a file whose header is already validated and reports the first tensor
 * holding a NaN or Inf (integer tensors are skipped). Reads in chunks of `chunkBytes` (default 4 MiB).
 */
export async function scanFinite(
  path: string,
  header: SafetensorsHeader,
  chunkBytes: number = DEFAULT_CHUNK_BYTES,
): Promise<ScanFiniteResult> {
  const fh = await open(path, 'r');
  try {
    return await scanFiniteOpen(fh, header, chunkBytes);
  } finally {
    await fh.close();
  }
}

/** {@link scanFinite} on an open file, optionally reusing `buffer` for the reads. */
export async function scanFiniteOpen(
  fh: FileHandle,
  header: SafetensorsHeader,
  chunkBytes: number = DEFAULT_CHUNK_BYTES,
  buffer?: Uint8Array,
): Promise<ScanFiniteResult> {
  let bytesRead = 0;
  for await (const seg of bodySegments(fh, header, chunkBytes, buffer)) {
    bytesRead += seg.bytes.length;
    const i = firstNonFinite(seg.bytes, seg.tensor.dtype);
    if (i >= 0) {
      const element = seg.firstElement + i;
      const message = `tensor "${seg.tensor.name}" holds a non-finite value at element ${element}`;
      return { ok: false, code: 'non_finite', message, tensor: seg.tensor.name, element, bytesRead };
    }
  }
  return { ok: true, bytesRead };
}

/** A decoded tensor. */
export interface DecodedTensor {
  dtype: Dtype;
  shape: number[];
  data: Float32Array;
}

/** Result of {@link readTensorsF32}. */
export type ReadTensorsResult =
  { ok: true; header: SafetensorsHeader; tensors: Map<string, DecodedTensor> } | HeaderFailure;

/**
 * Decodes every tensor to float32 (whatever its dtype), keyed by name in file order.
 * Holds the whole model: meant for tests and small models, not for aggregation.
 */
export async function readTensorsF32(source: string | Uint8Array): Promise<ReadTensorsResult> {
  if (typeof source !== 'string') {
    const parsed = parseHeader(source, source.length);
    if (!parsed.ok) return parsed;
    const { header } = parsed;
    const tensors = new Map<string, DecodedTensor>();
    for (const t of header.tensors) {
      const data = new Float32Array(t.numel);
      const bytes = source.subarray(header.dataStart + t.begin, header.dataStart + t.end);
      decodeToF32(bytes, t.dtype, data);
      tensors.set(t.name, { dtype: t.dtype, shape: t.shape, data });
    }
    return { ok: true, header, tensors };
  }
  const fh = await open(source, 'r');
  try {
    const parsed = await readHeaderFrom(fh);
    if (!parsed.ok) return parsed;
    const { header } = parsed;
    const tensors = new Map<string, DecodedTensor>();
    for (const t of header.tensors) {
      tensors.set(t.name, { dtype: t.dtype, shape: t.shape, data: new Float32Array(t.numel) });
    }
    for await (const seg of bodySegments(fh, header)) {
      decodeToF32(seg.bytes, seg.tensor.dtype, tensors.get(seg.tensor.name)!.data, seg.firstElement);
    }
    return { ok: true, header, tensors };
  } finally {
    await fh.close();
  }
}
