import { encodeSafetensors, type TensorData } from '../../src/training/safetensors/encode.js';
import { readTensorsF32 } from '../../src/training/safetensors/read.js';

/** Safetensors files for the tests: well-formed ones, hand-written ones, and the malformed corpus. */

/** A small model: tensors "a" [4] and "b" [2, 2], F32 unless told. */
export function model(a: number[], b: number[], dtype: 'F32' | 'F16' | 'BF16' = 'F32'): Buffer {
  const tensors: TensorData[] = [
    { name: 'a', dtype, shape: [4], data: Float32Array.from(a) },
    { name: 'b', dtype, shape: [2, 2], data: Float32Array.from(b) },
  ];
  return encodeSafetensors(tensors);
}

/** The values of a safetensors file as plain arrays, by tensor name. */
export async function values(buf: Uint8Array): Promise<Record<string, number[]>> {
  const r = await readTensorsF32(buf);
  if (!r.ok) throw new Error(r.message);
  const out: Record<string, number[]> = {};
  for (const [name, t] of r.tensors) out[name] = [...t.data];
  return out;
}

/** A safetensors file written by hand: 8-byte length, the JSON text, then `body` zero bytes. */
export function rawSafetensors(header: string, body: number, declared?: number): Buffer {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(declared ?? json.length));
  return Buffer.concat([len, json, Buffer.alloc(body)]);
}

/** One F32 tensor's header entry. */
export const f32Entry = (shape: number[], from: number, to: number): string =>
  `{"dtype":"F32","shape":${JSON.stringify(shape)},"data_offsets":[${from},${to}]}`;

/** An F32 update of 300 values (1,200 bytes of data): over a MAX_UPLOAD_BYTES of 1,024. */
export const oversizeUpdate = (): Buffer =>
  encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [300], data: new Float32Array(300) }]);

/** An update the server must refuse, with the status and error code it must answer. */
export interface MalformedUpdate {
  what: string;
  body: Buffer;
  status: number;
  code: string;
}

/**
 * Updates every upload path must refuse before they reach a round whose first update was a
 * `model` (F32 "a" [4] and "b" [2, 2]), on a server with a MAX_UPLOAD_BYTES of 1,024: broken
 * headers, updates that do not match the round, integer and non-finite values, and one too large.
 */
export function malformedUpdates(): MalformedUpdate[] {
  const bad = (what: string, body: Buffer, code: string, status = 400) => ({ what, body, status, code });
  return [
    bad('bad header', rawSafetensors('{not json', 16), 'invalid_json'),
    bad('header longer than the file', rawSafetensors('{}', 0, 10_000), 'header_exceeds_file'),
    bad(
      'overlapping offsets',
      rawSafetensors(`{"a":${f32Entry([4], 0, 16)},"b":${f32Entry([2, 2], 8, 24)}}`, 24),
      'overlap',
    ),
    bad(
      'offsets out of range',
      rawSafetensors(`{"a":${f32Entry([4], 0, 16)},"b":${f32Entry([2, 2], 16, 40)}}`, 32),
      'offsets_out_of_bounds',
    ),
    bad(
      'duplicate tensor names',
      rawSafetensors(`{"a":${f32Entry([4], 0, 16)},"a":${f32Entry([4], 16, 32)}}`, 32),
      'duplicate_tensor',
    ),
    bad('wrong dtype', model([1, 1, 1, 1], [1, 1, 1, 1], 'F16'), 'dtype_mismatch'),
    bad(
      'wrong shape',
      encodeSafetensors([
        { name: 'a', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
        { name: 'b', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
      ]),
      'shape_mismatch',
    ),
    bad(
      'missing tensor',
      encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [4], data: new Float32Array(4) }]),
      'missing_tensor',
    ),
    bad(
      'integer dtype',
      encodeSafetensors([{ name: 'a', dtype: 'I32', shape: [4], data: new Uint8Array(16) }]),
      'unsupported_dtype',
    ),
    bad('NaN', model([1, NaN, 1, 1], [1, 1, 1, 1]), 'non_finite'),
    bad('+Inf', model([1, 1, 1, 1], [1, Infinity, 1, 1]), 'non_finite'),
    bad('-Inf', model([1, 1, 1, 1], [1, 1, 1, -Infinity]), 'non_finite'),
    bad('oversize', oversizeUpdate(), 'too_large', 413),
  ];
}
