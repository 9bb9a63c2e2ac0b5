/**
 * Writing an aggregated model from several threads at once: the output file is split into
 * contiguous parts on digest-piece boundaries (4 MiB, digest.ts), each thread converts, hashes
 * and writes its part at its offset, and the coordinating thread hashes only the pieces no
 * thread saw whole (the first, which holds the header, and any piece cut by a part boundary),
 * reading them back. The file is the one the sequential writer (flat-output.ts) produces, byte
 * for byte, digest included: same header, same tensor order, same rounding.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AtomicFile } from '../model-store/atomic-file.js';
import { DIGEST_PIECE_BYTES, digestOfPieces } from '../safetensors/digest.js';
import { dtypeSize } from '../safetensors/dtypes.js';
import { buildHeader, type WrittenFile } from '../safetensors/encode.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import { f32ToBf16, f32ToF16 } from '../safetensors/half.js';
import { chunkSegments, locate, type FlatLayout } from './layout.js';

/** Bytes per read when the coordinating thread hashes a piece back from the file. */
const READ_BACK_BYTES = 1 << 20;

/** One thread's part of the output: flat elements [from, to), written from file byte `fileAt`. */
export interface OutputPart {
  from: number;
  to: number;
  fileAt: number;
}

/** What a thread reports for its part: the digests of the pieces it wrote whole. */
export interface PartDigests {
  pieces: { index: number; digest: Uint8Array }[];
}

/** Where the output's tensors go: the global model's, laid end to end in flat order. */
export function outputHeader(
  layout: FlatLayout,
  metadata?: Record<string, string>,
): { header: SafetensorsHeader; prefix: Uint8Array } {
  return buildHeader(layout.tensors, metadata ?? layout.header.metadata);
}

/** File offset of flat element `flat` (the file's end for the total). */
function fileOffset(layout: FlatLayout, out: SafetensorsHeader, flat: number): number {
  if (flat >= layout.totalElements) return out.fileBytes;
  const { tensor, element } = locate(layout, flat);
  const t = out.tensors[tensor]!;
  return out.dataStart + t.begin + element * dtypeSize(t.dtype);
}

/** The first flat element whose bytes start at or after file byte `byte`. */
function elementAt(layout: FlatLayout, out: SafetensorsHeader, byte: number): number {
  const body = byte - out.dataStart;
  if (body <= 0) return 0;
  const g = out.tensors.findIndex((t) => body < t.end);
  if (g < 0) return layout.totalElements;
  const t = out.tensors[g]!;
  const size = dtypeSize(t.dtype);
  return layout.flatStart[g]! + Math.ceil(Math.max(0, body - t.begin) / size);
}

/**
 * Splits the output among `threads` threads, each a run of whole digest pieces (a boundary that
 * would cut an element moves to the next element; that piece is then hashed by the caller).
 */
export function outputParts(layout: FlatLayout, out: SafetensorsHeader, threads: number): OutputPart[] {
  const pieces = Math.ceil(out.fileBytes / DIGEST_PIECE_BYTES);
  const cuts = [0];
  for (let t = 1; t < threads; t++) {
    const byte = Math.round((t * pieces) / threads) * DIGEST_PIECE_BYTES;
    cuts.push(Math.max(cuts[cuts.length - 1]!, elementAt(layout, out, byte)));
  }
  cuts.push(layout.totalElements);
  return cuts
    .slice(0, -1)
    .map((from, t) => ({ from, to: cuts[t + 1]!, fileAt: fileOffset(layout, out, from) }));
}

/**
 * Hashes bytes written in order from file byte `at`, piece by piece: only pieces that start and
 * end inside the range (or end at the file's end) get a digest.
 */
export class RangeDigest {
  readonly pieces: PartDigests['pieces'] = [];
  private hash: Hash | undefined;

  constructor(
    private at: number,
    private readonly fileBytes: number,
  ) {
    this.hash = at % DIGEST_PIECE_BYTES === 0 ? createHash('sha256') : undefined;
  }

  update(bytes: Uint8Array): void {
    for (let off = 0; off < bytes.length;) {
      const n = Math.min(bytes.length - off, DIGEST_PIECE_BYTES - (this.at % DIGEST_PIECE_BYTES));
      this.hash?.update(bytes.subarray(off, off + n));
      off += n;
      this.at += n;
      if (this.at % DIGEST_PIECE_BYTES === 0 || this.at === this.fileBytes) {
        const index = Math.floor((this.at - 1) / DIGEST_PIECE_BYTES);
        if (this.hash) this.pieces.push({ index, digest: this.hash.digest() });
        this.hash = createHash('sha256');
      }
    }
  }
}

/**
 * Writes one part: `scale(at, n)` gives float32 values of flat [at, at + n) (n at most
 * `maxElements`) in a buffer of at least 4n bytes, which is then converted in place to the
 * output's dtypes (BF16 by `toBf16`, e.g. a SIMD kernel, else half.ts), hashed and written at its
 * offset in `tmpPath`.
 */
export function writePart(
  layout: FlatLayout,
  out: SafetensorsHeader,
  part: OutputPart,
  tmpPath: string,
  maxElements: number,
  scale: (at: number, n: number) => Float32Array,
  toBf16: (src: Float32Array, dst: Uint16Array) => void = f32ToBf16,
): PartDigests {
  const digest = new RangeDigest(part.fileAt, out.fileBytes);
  const fd = openSync(tmpPath, 'r+');
  try {
    let position = part.fileAt;
    for (let start = part.from; start < part.to; start += maxElements) {
      const end = Math.min(part.to, start + maxElements);
      const values = scale(start, end - start);
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      // Each piece's bytes go right after the previous piece's: never past its own float32 input,
      // so a forward pass in place reads every value before it is overwritten.
      let used = 0;
      for (const seg of chunkSegments(layout, start, end)) {
        const dtype = layout.tensors[seg.tensor]!.dtype;
        const src = values.subarray(seg.chunkOffset, seg.chunkOffset + seg.count);
        if (dtype === 'F32') {
          bytes.copyWithin(used, seg.chunkOffset * 4, (seg.chunkOffset + seg.count) * 4);
        } else {
          const dst = new Uint16Array(values.buffer, values.byteOffset + used, seg.count);
          if (dtype === 'F16') f32ToF16(src, dst);
          else toBf16(src, dst);
        }
        used += seg.count * dtypeSize(dtype);
      }
      const chunk = bytes.subarray(0, used);
      for (let done = 0; done < used;) done += writeSync(fd, chunk, done, used - done, position + done);
      position += used;
      digest.update(chunk);
    }
  } finally {
    closeSync(fd);
  }
  return { pieces: digest.pieces };
}

/**
 * Writes the aggregated model to `outPath` atomically with `writeParts(tmpPath, out, parts)`
 * doing the parts (one per thread, concurrently), then hashes the pieces no part saw whole.
 */
export async function writeInParts(
  outPath: string,
  layout: FlatLayout,
  metadata: Record<string, string> | undefined,
  threads: number,
  writeParts: (tmpPath: string, out: SafetensorsHeader, parts: OutputPart[]) => Promise<PartDigests[]>,
): Promise<WrittenFile> {
  const { header: out, prefix } = outputHeader(layout, metadata);
  const file = await AtomicFile.create(dirname(outPath));
  try {
    await file.writeAt(prefix, 0);
    await file.truncate(out.fileBytes);
    const parts = outputParts(layout, out, threads);
    const writing = writeParts(file.tmpPath, out, parts);
    // While the threads write, the disk writes back what they wrote so far (fdatasync in the
    // I/O pool), so the final fsync has little left: the disk and the hashing overlap.
    let settled = false;
    const stop = () => (settled = true);
    writing.then(stop, stop);
    while (!settled) await file.datasync();
    const reported = await writing;
    const pieces: Uint8Array[] = [];
    for (const r of reported) for (const p of r.pieces) pieces[p.index] = p.digest;
    const count = Math.ceil(out.fileBytes / DIGEST_PIECE_BYTES);
    // The temp file is open for writing only: the missing pieces are read through a handle of their own.
    const reader = await open(file.tmpPath, 'r');
    try {
      const bytes = Buffer.alloc(Math.min(READ_BACK_BYTES, out.fileBytes));
      for (let i = 0; i < count; i++) {
        if (pieces[i]) continue;
        const start = i * DIGEST_PIECE_BYTES;
        const end = Math.min(start + DIGEST_PIECE_BYTES, out.fileBytes);
        const hash = createHash('sha256');
        for (let at = start; at < end;) {
          const { bytesRead } = await reader.read(bytes, 0, Math.min(bytes.length, end - at), at);
          if (bytesRead === 0) throw new Error(`${file.tmpPath} ends before byte ${end}`);
          hash.update(bytes.subarray(0, bytesRead));
          at += bytesRead;
        }
        pieces[i] = hash.digest();
      }
    } finally {
      await reader.close();
    }
    const digest = digestOfPieces(pieces);
    await file.seal(digest);
    await file.commit(outPath);
    return { path: outPath, bytes: out.fileBytes, digest };
  } catch (err) {
    await file.abort();
    throw err;
  }
}
