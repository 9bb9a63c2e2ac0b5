/**
 * Writes an aggregated model chunk by chunk with the global model's tensor names, order and
 * dtypes (float32 values rounded to F16/BF16 to nearest even), atomically, hashing as it goes.
 */
import { dtypeSize } from '../safetensors/dtypes.js';
import {
  createSafetensorsWriter,
  type SafetensorsFileWriter,
  type WrittenFile,
} from '../safetensors/encode.js';
import { f32ToBf16, f32ToF16 } from '../safetensors/half.js';
import { chunkSegments, type FlatLayout } from './layout.js';

/** A sequential writer of flat chunks. */
export class FlatOutput {
  private next = 0;
  private staging = new Uint8Array(0);
  private half = new Uint16Array(0);

  private constructor(
    private readonly layout: FlatLayout,
    private readonly writer: SafetensorsFileWriter,
  ) {}

  /** Opens a temp file next to `path`; metadata defaults to the global model's. */
  static async create(
    path: string,
    layout: FlatLayout,
    metadata?: Record<string, string>,
  ): Promise<FlatOutput> {
    const writer = await createSafetensorsWriter(path, layout.tensors, metadata ?? layout.header.metadata);
    return new FlatOutput(layout, writer);
  }

  /** Appends the values of the flat range [start, start + values.length); ranges must come in order. */
  async write(start: number, values: Float32Array): Promise<void> {
    if (start !== this.next) throw new Error(`chunk at ${start}, expected ${this.next}`);
    const end = start + values.length;
    const segs = chunkSegments(this.layout, start, end);
    const need = values.length * this.layout.maxElementSize;
    if (this.staging.length < need) this.staging = new Uint8Array(need);
    let at = 0;
    for (const seg of segs) {
      const dtype = this.layout.tensors[seg.tensor]!.dtype;
      const src = values.subarray(seg.chunkOffset, seg.chunkOffset + seg.count);
      let bytes: Uint8Array;
      if (dtype === 'F32') {
        bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
      } else {
        if (this.half.length < seg.count) this.half = new Uint16Array(Math.max(seg.count, values.length));
        const h = dtype === 'F16' ? f32ToF16(src, this.half) : f32ToBf16(src, this.half);
        bytes = new Uint8Array(h.buffer, h.byteOffset, seg.count * 2);
      }
      this.staging.set(bytes, at);
      at += seg.count * dtypeSize(dtype);
    }
    await this.writer.write(this.staging.subarray(0, at));
    this.next = end;
  }

  /** Publishes the file (fsync + rename) and returns its size and sha256. */
  async close(): Promise<WrittenFile> {
    return this.writer.close();
  }

  /** Discards the temp file. */
  async abort(): Promise<void> {
    await this.writer.abort();
  }
}
