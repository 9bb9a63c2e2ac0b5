/**
 * Safetensors element types.
 *
 * Glossary used across `src/training`:
 * - dtype: the safetensors name of an element type (`F32`, `BF16`, ...).
 * - numel: number of elements of a tensor (product of its shape; 1 for a scalar `[]`).
 * - body / buffer: the bytes after the JSON header; tensor offsets are relative to its start.
 */

/** Byte size of each dtype this codec understands (sub-byte float formats are not supported). */
export const DTYPE_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;

/** A dtype name accepted by {@link parseHeader}. */
export type Dtype = keyof typeof DTYPE_SIZES;

/** The dtypes the aggregation strategies can average (converted to float32 or wider on the fly). */
export type AggregatableDtype = 'F32' | 'F16' | 'BF16';

/** True when `name` is a dtype this codec can parse. */
export function isDtype(name: string): name is Dtype {
  return Object.prototype.hasOwnProperty.call(DTYPE_SIZES, name);
}

/** True for F32, F16 and BF16: the dtypes aggregation accepts. */
export function isAggregatable(dtype: Dtype): dtype is AggregatableDtype {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

/** Size in bytes of one element of `dtype`. */
export function dtypeSize(dtype: Dtype): number {
  return DTYPE_SIZES[dtype];
}
