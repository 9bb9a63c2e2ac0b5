/**
 * The CPU side of receiving an upload: sha256 of every byte in order, and the NaN/Inf test of
 * every value of the body, run on pieces the receiving thread has copied into a shared
 * WebAssembly memory. It runs in a worker thread for large uploads (upload-check.worker.ts),
 * so hashing and scanning one piece overlaps with receiving and writing the next, or inline
 * for small ones; the messages are the same either way.
 */
import { createHash } from 'node:crypto';
import type { Dtype } from '../safetensors/dtypes.js';
import { dtypeSize } from '../safetensors/dtypes.js';
import { createFiniteScanner, type FiniteScanner, type WasmMemory } from '../safetensors/finite-scan.js';

/** A tensor's byte range in the body (after the header). */
export interface ScanTensor {
  name: string;
  dtype: Dtype;
  begin: number;
  end: number;
}

export interface CheckerInit {
  memory: WasmMemory;
  /** Tensors in body order; empty ones may be left out. */
  tensors: ScanTensor[];
  /** False when some tensor splits elements across pieces: the caller scans the stored file instead. */
  scan: boolean;
}

export type CheckRequest =
  /**
   * The next `len` bytes of the file, at memory [ptr, ptr + len); `at` is their offset in the
   * body (negative for header bytes, which are hashed and not scanned).
   */
  | { op: 'piece'; slot: number; ptr: number; len: number; at: number }
  /** No more pieces: answer the digest. */
  | { op: 'end' };

export type CheckReply =
  /** The piece is hashed and scanned; its memory may be reused. */
  | { op: 'free'; slot: number }
  | { op: 'non_finite'; tensor: string; element: number }
  | { op: 'digest'; digest: string }
  | { op: 'error'; message: string };

/** Hashes and scans pieces in the order they are sent. */
export class PieceChecker {
  private readonly hash = createHash('sha256');
  private readonly scanner: FiniteScanner;
  private readonly tensors: ScanTensor[];
  private readonly memory: WasmMemory;
  private readonly scan: boolean;
  /** First tensor that may still overlap unscanned bytes. */
  private t = 0;
  private failed = false;

  constructor(init: CheckerInit) {
    this.memory = init.memory;
    this.scanner = createFiniteScanner(init.memory);
    this.tensors = init.tensors.filter((t) => t.end > t.begin);
    this.scan = init.scan;
  }

  handle(req: CheckRequest): CheckReply | null {
    switch (req.op) {
      case 'piece': {
        if (this.failed) return { op: 'free', slot: req.slot };
        const bad = this.scan ? this.scanPiece(req.ptr, req.len, req.at) : null;
        if (bad) {
          this.failed = true;
          return bad;
        }
        this.hash.update(new Uint8Array(this.memory.buffer, req.ptr, req.len));
        return { op: 'free', slot: req.slot };
      }
      case 'end':
        return { op: 'digest', digest: this.hash.digest('hex') };
    }
  }

  private scanPiece(ptr: number, len: number, from: number): CheckReply | null {
    const to = from + len;
    while (this.t < this.tensors.length && this.tensors[this.t]!.end <= from) this.t++;
    for (let i = this.t; i < this.tensors.length; i++) {
      const t = this.tensors[i]!;
      if (t.begin >= to) break;
      const s = Math.max(from, t.begin);
      const e = Math.min(to, t.end);
      const k = this.scanner.firstNonFinite(ptr + (s - from), e - s, t.dtype);
      if (k >= 0)
        return { op: 'non_finite', tensor: t.name, element: (s - t.begin) / dtypeSize(t.dtype) + k };
    }
    return null;
  }
}
