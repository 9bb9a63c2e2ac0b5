/**
 * Safetensors header parsing and validation, written from the format's public description:
 * 8-byte little-endian u64 N, N bytes of UTF-8 JSON, then the byte buffer. Every problem is
 * reported as a value ({ ok: false, code, message }), never thrown, so an upload can be
 * refused before its body is read.
 */
import { dtypeSize, isDtype, type Dtype } from './dtypes.js';

/** Default cap on the JSON header length N: 100 MiB, as the reference implementation uses. */
export const DEFAULT_MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** One tensor of a parsed header. `begin`/`end` are byte offsets relative to the buffer start. */
export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Product of `shape` (1 for a scalar). */
  numel: number;
  begin: number;
  end: number;
}

/** A validated header. */
export interface SafetensorsHeader {
  /** Tensors ordered by their data offset, which is the order of their bytes in the file. */
  tensors: TensorInfo[];
  metadata: Record<string, string> | undefined;
  /** N: length of the JSON header in bytes. */
  headerBytes: number;
  /** 8 + N: file offset where the buffer starts. */
  dataStart: number;
  /** Size of the buffer (sum of all tensor sizes). */
  bufferBytes: number;
  /** 8 + N + bufferBytes. */
  fileBytes: number;
}

/** Stable codes of header validation failures. */
export type HeaderFailureCode =
  | 'truncated'
  | 'header_too_large'
  | 'header_exceeds_file'
  | 'invalid_utf8'
  | 'invalid_json'
  | 'not_object'
  | 'duplicate_tensor'
  | 'invalid_metadata'
  | 'invalid_entry'
  | 'unknown_dtype'
  | 'invalid_shape'
  | 'invalid_offsets'
  | 'size_mismatch'
  | 'offsets_out_of_bounds'
  | 'overlap'
  | 'gap'
  | 'file_size_mismatch'
  | 'not_safetensors';

/** A header that failed validation; `tensor` names the offending tensor when there is one. */
export interface HeaderFailure {
  ok: false;
  code: HeaderFailureCode;
  message: string;
  tensor?: string;
}

/** Result of {@link parseHeader}. */
export type ParseHeaderResult = { ok: true; header: SafetensorsHeader } | HeaderFailure;

/** Options of {@link parseHeader}. */
export interface ParseHeaderOptions {
  /** Largest accepted N. Default {@link DEFAULT_MAX_HEADER_BYTES} (100 MiB). */
  maxHeaderBytes?: number;
}

function fail(code: HeaderFailureCode, message: string, tensor?: string): HeaderFailure {
  return tensor === undefined ? { ok: false, code, message } : { ok: false, code, message, tensor };
}

/**
 * Reads N from the first 8 bytes and checks it against the limit and the file size.
 * Returns the number of bytes (8 + N) the caller must read before calling {@link parseHeader}.
 */
export function peekHeaderLength(
  first: Uint8Array,
  fileBytes: number,
  options: ParseHeaderOptions = {},
): { ok: true; headerBytes: number; prefixBytes: number } | HeaderFailure {
  const max = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  if (first.length < 8 || fileBytes < 8) return fail('truncated', 'fewer than 8 bytes: no header length');
  const n = new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(max) || Number(n) > fileBytes - 8) {
    const other = otherFormat(first);
    if (other) return fail('not_safetensors', `this is ${other}, not safetensors; save with safetensors`);
  }
  if (n > BigInt(max)) return fail('header_too_large', `header length ${n} exceeds the limit ${max}`);
  const headerBytes = Number(n);
  if (headerBytes > fileBytes - 8) {
    return fail('header_exceeds_file', `header length ${headerBytes} exceeds the file (${fileBytes} bytes)`);
  }
  return { ok: true, headerBytes, prefixBytes: 8 + headerBytes };
}

/**
 * Names the formats people send by mistake, from their first bytes: a Python pickle (torch.save
 * with the legacy format, a .pkl) starts with the PROTO opcode 0x80 and a version 2-5; a zip
 * (torch.save's default .pt, a .zip) with "PK\x03\x04". Only asked when the length prefix is
 * impossible anyway, so a real safetensors file is never misnamed.
 */
function otherFormat(first: Uint8Array): string | null {
  if (first[0] === 0x80 && first[1] !== undefined && first[1] >= 2 && first[1] <= 5)
    return 'a Python pickle (a PyTorch .pt/.pth saved by torch.save, or a .pkl)';
  if (first[0] === 0x50 && first[1] === 0x4b && first[2] === 0x03 && first[3] === 0x04)
    return "a zip archive (torch.save's default .pt format, or a .zip)";
  return null;
}

/**
 * Validates a safetensors header.
 * @param first at least the first 8 + N bytes of the file
 * @param fileBytes the total size of the file
 */
export function parseHeader(
  first: Uint8Array,
  fileBytes: number,
  options: ParseHeaderOptions = {},
): ParseHeaderResult {
  const peek = peekHeaderLength(first, fileBytes, options);
  if (!peek.ok) return peek;
  const { headerBytes, prefixBytes } = peek;
  if (first.length < prefixBytes) {
    return fail('truncated', `need ${prefixBytes} bytes to read the header, got ${first.length}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(first.subarray(8, prefixBytes));
  } catch {
    return fail('invalid_utf8', 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail('invalid_json', `header is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return fail('not_object', 'header is not a JSON object');
  }
  const duplicate = findDuplicateTopLevelKey(text);
  if (duplicate !== undefined) return fail('duplicate_tensor', `duplicate key "${duplicate}"`, duplicate);

  const bufferBytes = fileBytes - prefixBytes;
  let metadata: Record<string, string> | undefined;
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      const m = parseMetadata(entry);
      if (!m.ok) return m;
      metadata = m.metadata;
      continue;
    }
    const t = parseEntry(name, entry, bufferBytes);
    if (!t.ok) return t;
    tensors.push(t.tensor);
  }
  // Zero-sized tensors sort before a tensor starting at the same offset, so they never overlap.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of tensors) {
    if (t.begin < cursor) return fail('overlap', `tensor "${t.name}" overlaps the previous tensor`, t.name);
    if (t.begin > cursor) {
      return fail('gap', `${t.begin - cursor} unused bytes before tensor "${t.name}"`, t.name);
    }
    cursor = t.end;
  }
  if (cursor !== bufferBytes) {
    return fail(
      'file_size_mismatch',
      `tensors cover ${cursor} bytes but the buffer holds ${bufferBytes} (file ${fileBytes} bytes)`,
    );
  }
  return {
    ok: true,
    header: { tensors, metadata, headerBytes, dataStart: prefixBytes, bufferBytes, fileBytes },
  };
}

function parseMetadata(entry: unknown): { ok: true; metadata: Record<string, string> } | HeaderFailure {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    return fail('invalid_metadata', '__metadata__ must be an object of strings');
  }
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof v !== 'string') return fail('invalid_metadata', `__metadata__["${k}"] is not a string`);
    metadata[k] = v;
  }
  return { ok: true, metadata };
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseEntry(
  name: string,
  entry: unknown,
  bufferBytes: number,
): { ok: true; tensor: TensorInfo } | HeaderFailure {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    return fail('invalid_entry', `tensor "${name}" is not an object`, name);
  }
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== 'string' || !isDtype(dtype)) {
    return fail('unknown_dtype', `tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`, name);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
    return fail('invalid_shape', `tensor "${name}" shape must be an array of non-negative integers`, name);
  }
  let numel = 1;
  for (const d of shape) numel *= d;
  const bytes = numel * dtypeSize(dtype);
  if (!Number.isSafeInteger(bytes)) return fail('invalid_shape', `tensor "${name}" is too large`, name);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
    return fail('invalid_offsets', `tensor "${name}" data_offsets must be [begin, end] integers`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) return fail('invalid_offsets', `tensor "${name}" ends before it begins`, name);
  if (end > bufferBytes) {
    return fail(
      'offsets_out_of_bounds',
      `tensor "${name}" ends at ${end}, past the buffer (${bufferBytes})`,
      name,
    );
  }
  if (end - begin !== bytes) {
    return fail(
      'size_mismatch',
      `tensor "${name}" spans ${end - begin} bytes but ${dtype}${JSON.stringify(shape)} needs ${bytes}`,
      name,
    );
  }
  return { ok: true, tensor: { name, dtype, shape: [...shape], numel, begin, end } };
}

/**
 * Finds a key that occurs twice at the top level of a JSON object text (already known to be
 * valid JSON). JSON.parse keeps the last duplicate silently, so this small scanner walks the
 * top-level keys itself; keys are decoded with JSON.parse so `"a"` and `"\u0061"` collide.
 */
export function findDuplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(start, i + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    } else if (c === 0x2c /* , */ && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

/** Why two headers are not compatible. */
export interface CompatibilityFailure {
  ok: false;
  code: 'tensor_count' | 'missing_tensor' | 'dtype_mismatch' | 'shape_mismatch';
  message: string;
  tensor?: string;
}

/**
 * Checks that two headers hold the same tensor names with the same dtypes and shapes (data
 * offsets may differ: writers order tensors differently). Fails on the first mismatch,
 * walking `a` in its order.
 */
export function compatible(a: SafetensorsHeader, b: SafetensorsHeader): { ok: true } | CompatibilityFailure {
  const byName = new Map(b.tensors.map((t) => [t.name, t]));
  for (const ta of a.tensors) {
    const tb = byName.get(ta.name);
    if (tb === undefined) {
      return {
        ok: false,
        code: 'missing_tensor',
        message: `tensor "${ta.name}" is missing`,
        tensor: ta.name,
      };
    }
    if (ta.dtype !== tb.dtype) {
      const message = `tensor "${ta.name}" dtype ${ta.dtype} != ${tb.dtype}`;
      return { ok: false, code: 'dtype_mismatch', message, tensor: ta.name };
    }
    if (ta.shape.length !== tb.shape.length || ta.shape.some((d, i) => d !== tb.shape[i])) {
      const message = `tensor "${ta.name}" shape ${JSON.stringify(ta.shape)} != ${JSON.stringify(tb.shape)}`;
      return { ok: false, code: 'shape_mismatch', message, tensor: ta.name };
    }
  }
  if (a.tensors.length !== b.tensors.length) {
    const extra = b.tensors.find((t) => !a.tensors.some((x) => x.name === t.name));
    const message = `${a.tensors.length} tensors != ${b.tensors.length}`;
    return extra === undefined
      ? { ok: false, code: 'tensor_count', message }
      : {
          ok: false,
          code: 'tensor_count',
          message: `${message}: unexpected "${extra.name}"`,
          tensor: extra.name,
        };
  }
  return { ok: true };
}
