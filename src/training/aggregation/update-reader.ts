/**
 * Reads flat chunks of one stored update, converting F16/BF16 to float32 per chunk. One
 * staging buffer per reader, reused for every chunk, so memory is one chunk per update.
 */
import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { AggregatableDtype } from '../safetensors/dtypes.js';
import { dtypeSize } from '../safetensors/dtypes.js';
import { compatible, type ParseHeaderOptions, type SafetensorsHeader } from '../safetensors/header.js';
import {
  decodeToF32,
  readAt,
  readHeaderFrom,
  scanFiniteOpen,
  type ScanFiniteResult,
} from '../safetensors/read.js';
import { chunkSegments, type FlatLayout } from './layout.js';

/** Why an update cannot be read. */
export interface UpdateFailure {
  ok: false;
  code: 'invalid_header' | 'incompatible' | 'non_finite';
  message: string;
  tensor?: string;
}

/** An open update file positioned on the global layout. */
export class UpdateReader {
  /** Bytes read from the body so far. */
  bytesRead = 0;

  private constructor(
    private readonly fh: FileHandle,
    /** The update's own header (its offsets may differ from the global model's). */
    readonly header: SafetensorsHeader,
    private readonly layout: FlatLayout,
    /** File offset of the first byte of each global tensor in this file. */
    private readonly fileBegin: number[],
    private staging: Uint8Array,
  ) {}

  /**
   * Opens `path`, validates its header and checks it against the global layout. `staging`, when
   * given, is reused for reads (grown if too small) so repeated opens allocate nothing.
   */
  static async open(
    path: string,
    layout: FlatLayout,
    options: ParseHeaderOptions & { staging?: Uint8Array } = {},
  ): Promise<{ ok: true; reader: UpdateReader } | UpdateFailure> {
    const fh = await open(path, 'r');
    try {
      const parsed = await readHeaderFrom(fh, options);
      if (!parsed.ok) {
        await fh.close();
        return { ok: false, code: 'invalid_header', message: parsed.message, ...tensorOf(parsed.tensor) };
      }
      const check = compatible(layout.header, parsed.header);
      if (!check.ok) {
        await fh.close();
        return { ok: false, code: 'incompatible', message: check.message, ...tensorOf(check.tensor) };
      }
      const byName = new Map(parsed.header.tensors.map((t) => [t.name, t]));
      const fileBegin = layout.tensors.map((t) => parsed.header.dataStart + byName.get(t.name)!.begin);
      const staging = options.staging ?? new Uint8Array(0);
      return { ok: true, reader: new UpdateReader(fh, parsed.header, layout, fileBegin, staging) };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /**
   * Reads the flat range [start, end) into `dst[0 .. end-start)` as float32. Pieces that are
   * contiguous in this file are read with one call. Returns the bytes read.
   */
  async read(start: number, end: number, dst: Float32Array): Promise<number> {
    const segs = chunkSegments(this.layout, start, end);
    const need = (end - start) * this.layout.maxElementSize;
    if (this.staging.length < need) this.staging = new Uint8Array(need);
    const staging = this.staging;
    // Plan: staging offset of each piece, and the file runs that fill them.
    const stagingAt: number[] = [];
    let runFile = -1;
    let runStaging = 0;
    let runLength = 0;
    let used = 0;
    const reads: Promise<void>[] = [];
    const flush = (): void => {
      if (runLength === 0) return;
      const [f, s, l] = [runFile, runStaging, runLength];
      reads.push(
        readAt(this.fh, staging.subarray(s, s + l), l, f).then((got) => {
          if (got !== l) throw new Error(`update file shorter than its header declares`);
        }),
      );
    };
    for (const seg of segs) {
      const t = this.layout.tensors[seg.tensor]!;
      const bytes = seg.count * dtypeSize(t.dtype);
      const filePos = this.fileBegin[seg.tensor]! + seg.element * dtypeSize(t.dtype);
      if (runLength > 0 && filePos === runFile + runLength) {
        runLength += bytes;
      } else {
        flush();
        runFile = filePos;
        runStaging = used;
        runLength = bytes;
      }
      stagingAt.push(used);
      used += bytes;
    }
    flush();
    await Promise.all(reads);
    segs.forEach((seg, i) => {
      const t = this.layout.tensors[seg.tensor]!;
      const at = stagingAt[i]!;
      decodeToF32(staging.subarray(at, at + seg.count * dtypeSize(t.dtype)), t.dtype, dst, seg.chunkOffset);
    });
    this.bytesRead += used;
    return used;
  }

  /**
   * Reads the flat range [start, end) piece by piece (one piece per tensor it spans) into
   * `dst` from its first byte, blocking, and calls `each` after every piece with the piece's
   * dtype, its offset within the range and its element count. For worker threads, where a
   * blocking read costs less than a promise per chunk and the caller's kernel reads `dst`.
   * `dst` must hold (end - start) x maxElementSize bytes, or be a function that gives each piece
   * its own buffer (e.g. F32 pieces straight where they are used). Returns the bytes read.
   */
  readPiecesSync(
    start: number,
    end: number,
    dst: Uint8Array | ((dtype: AggregatableDtype, offset: number, count: number) => Uint8Array),
    each: (dtype: AggregatableDtype, offset: number, count: number) => void,
  ): number {
    let used = 0;
    for (const seg of chunkSegments(this.layout, start, end)) {
      const t = this.layout.tensors[seg.tensor]!;
      const size = dtypeSize(t.dtype);
      const length = seg.count * size;
      const position = this.fileBegin[seg.tensor]! + seg.element * size;
      const into = typeof dst === 'function' ? dst(t.dtype, seg.chunkOffset, seg.count) : dst;
      for (let done = 0; done < length;) {
        const got = readSync(this.fh.fd, into, done, length - done, position + done);
        if (got === 0) throw new Error(`update file shorter than its header declares`);
        done += got;
      }
      each(t.dtype, seg.chunkOffset, seg.count);
      used += length;
    }
    this.bytesRead += used;
    return used;
  }

  /** Scans the whole body for NaN/Inf on the raw bits (see scanFinite), reusing the staging buffer. */
  async scanFinite(): Promise<ScanFiniteResult> {
    if (this.staging.length < 8) this.staging = new Uint8Array(1 << 20);
    const r = await scanFiniteOpen(this.fh, this.header, this.staging.length, this.staging);
    this.bytesRead += r.bytesRead;
    return r;
  }

  /** Closes the file. */
  async close(): Promise<void> {
    await this.fh.close();
  }
}

function tensorOf(tensor: string | undefined): { tensor?: string } {
  return tensor === undefined ? {} : { tensor };
}

/** Index of the first NaN/Inf among `values[0 .. count)`, or -1. */
export function firstNonFiniteValue(values: Float32Array, count: number): number {
  for (let i = 0; i < count; i++) {
    const v = values[i]!;
    // v - v is 0 for every finite v and NaN for NaN and +-Inf.
    if (v - v !== 0) return i;
  }
  return -1;
}
