/**
 * Safetensors writers: an in-memory encoder for small models and tests, and a streaming file
 * writer that never holds the whole buffer and replaces its target atomically through
 * model-store/atomic-file.ts (temp file in the same folder, fsync, rename, folder fsync),
 * hashing the bytes as they go.
 */
import { dirname } from 'node:path';
import { AtomicFile } from '../model-store/atomic-file.js';
import { dtypeSize, type Dtype } from './dtypes.js';
import type { SafetensorsHeader, TensorInfo } from './header.js';
import { f32ToBf16, f32ToF16 } from './half.js';

/** Name, dtype and shape of a tensor to write. */
export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
}

/**
 * A tensor with its data. `Float32Array` data is accepted for F32, and for F16/BF16 (converted,
 * rounding to nearest even); `Uint16Array` holds raw F16/BF16 bits; a `Uint8Array`/`Buffer`
 * holds the raw little-endian bytes of any dtype.
 */
export interface TensorData extends TensorSpec {
  data: Float32Array | Uint16Array | Uint8Array;
}

/**
 * Lays tensors out contiguously in the given order and builds the header prefix
 * (8-byte length + JSON, padded with spaces so the buffer starts 8-byte aligned).
 */
export function buildHeader(
  specs: readonly TensorSpec[],
  metadata?: Record<string, string>,
): { header: SafetensorsHeader; prefix: Uint8Array } {
  const json: Record<string, unknown> = {};
  if (metadata !== undefined) json['__metadata__'] = metadata;
  const tensors: TensorInfo[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const s of specs) {
    if (s.name === '__metadata__' || names.has(s.name))
      throw new Error(`invalid or duplicate name "${s.name}"`);
    names.add(s.name);
    const numel = s.shape.reduce((a, b) => a * b, 1);
    const end = offset + numel * dtypeSize(s.dtype);
    json[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, end] };
    tensors.push({ name: s.name, dtype: s.dtype, shape: [...s.shape], numel, begin: offset, end });
    offset = end;
  }
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const pad = (8 - (text.length % 8)) % 8;
  const headerBytes = text.length + pad;
  const prefix = Buffer.alloc(8 + headerBytes, 0x20);
  prefix.writeBigUInt64LE(BigInt(headerBytes), 0);
  text.copy(prefix, 8);
  const header: SafetensorsHeader = {
    tensors,
    metadata,
    headerBytes,
    dataStart: 8 + headerBytes,
    bufferBytes: offset,
    fileBytes: 8 + headerBytes + offset,
  };
  return { header, prefix };
}

/** The raw little-endian bytes of one tensor's data, converting Float32Array to half when asked. */
export function tensorBytes(t: TensorData): Uint8Array {
  const numel = t.shape.reduce((a, b) => a * b, 1);
  let d: Float32Array | Uint16Array | Uint8Array = t.data;
  if (d instanceof Float32Array && t.dtype === 'F16') d = f32ToF16(d);
  else if (d instanceof Float32Array && t.dtype === 'BF16') d = f32ToBf16(d);
  const ok =
    d instanceof Uint8Array ||
    (d instanceof Float32Array && t.dtype === 'F32') ||
    (d instanceof Uint16Array && (t.dtype === 'F16' || t.dtype === 'BF16'));
  if (!ok)
    throw new TypeError(`tensor "${t.name}": ${d.constructor.name} data does not fit dtype ${t.dtype}`);
  const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  if (bytes.length !== numel * dtypeSize(t.dtype)) {
    throw new RangeError(`tensor "${t.name}": ${bytes.length} bytes, expected ${numel * dtypeSize(t.dtype)}`);
  }
  return bytes;
}

/** Encodes tensors (in the given order) into one safetensors Buffer. */
export function encodeSafetensors(tensors: readonly TensorData[], metadata?: Record<string, string>): Buffer {
  const { header, prefix } = buildHeader(tensors, metadata);
  const out = Buffer.allocUnsafe(header.fileBytes);
  out.set(prefix, 0);
  tensors.forEach((t, i) => out.set(tensorBytes(t), header.dataStart + header.tensors[i]!.begin));
  return out;
}

/** What a finished file write reports. */
export interface WrittenFile {
  path: string;
  /** Total file size. */
  bytes: number;
  /** The file's digest (model-store/digest.ts: sha256 over 4 MiB pieces), hex. */
  digest: string;
}

/** A streaming writer: body bytes are appended in tensor order, then `close()` publishes the file. */
export interface SafetensorsFileWriter {
  /** The header being written (tensor offsets in the order given). */
  readonly header: SafetensorsHeader;
  /** Appends body bytes; the total must end up equal to `header.bufferBytes`. */
  write(chunk: Uint8Array): Promise<void>;
  /** Checks the length, fsyncs, renames over the target and returns its digest. */
  close(): Promise<WrittenFile>;
  /** Discards the temp file; the target is left untouched. Safe to call after a failure. */
  abort(): Promise<void>;
}

/** Opens a temp file next to `path` and writes the header; see {@link SafetensorsFileWriter}. */
export async function createSafetensorsWriter(
  path: string,
  specs: readonly TensorSpec[],
  metadata?: Record<string, string>,
): Promise<SafetensorsFileWriter> {
  const { header, prefix } = buildHeader(specs, metadata);
  // In the target's folder, so the final rename is atomic (no cross-device move).
  const file = await AtomicFile.create(dirname(path));
  let state: 'open' | 'closed' | 'aborted' = 'open';
  const abort = async (): Promise<void> => {
    if (state !== 'open') return;
    state = 'aborted';
    await file.abort();
  };
  try {
    await file.write(prefix);
  } catch (err) {
    await abort();
    throw err;
  }
  return {
    header,
    async write(chunk) {
      if (state !== 'open') throw new Error('writer is not open');
      if (file.bytes - prefix.length + chunk.length > header.bufferBytes) {
        throw new RangeError(
          `writing ${file.bytes - prefix.length + chunk.length} body bytes, header declares ${header.bufferBytes}`,
        );
      }
      await file.write(chunk);
    },
    async close() {
      if (state !== 'open') throw new Error('writer is not open');
      const written = file.bytes - prefix.length;
      if (written !== header.bufferBytes) {
        await abort();
        throw new RangeError(`wrote ${written} body bytes, header declares ${header.bufferBytes}`);
      }
      state = 'closed';
      try {
        const digest = await file.seal();
        await file.commit(path);
        return { path, bytes: header.fileBytes, digest };
      } catch (err) {
        await file.abort();
        throw err;
      }
    },
    abort,
  };
}

/** Writes tensors to `path` atomically, one tensor at a time (no full-file buffer). */
export async function writeSafetensorsFile(
  path: string,
  tensors: readonly TensorData[],
  metadata?: Record<string, string>,
): Promise<WrittenFile> {
  const w = await createSafetensorsWriter(path, tensors, metadata);
  try {
    for (const t of tensors) await w.write(tensorBytes(t));
    return await w.close();
  } catch (err) {
    await w.abort();
    throw err;
  }
}
