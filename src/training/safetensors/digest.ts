/**
 * The digest of every model file AI Farm stores or serves (updates, global models,
 * checkpoints): sha256 over fixed 4 MiB pieces, then sha256 over the pieces' digests.
 *
 *     digest = hex(sha256(sha256(piece_0) || sha256(piece_1) || ... || sha256(piece_n-1)))
 *
 * where piece_i is bytes [i * 4 MiB, (i + 1) * 4 MiB) of the file, the last piece shorter (an
 * empty file has no piece: the digest is sha256 of nothing). Why not one sha256 of the file:
 * that is sequential, one core at about 1-1.4 GB/s, the limit of an upload; pieces can be
 * hashed on several cores at once, and a resumed upload keeps the digests of the pieces it
 * already has instead of a hash state Node cannot save. docs/protocol.md gives a Python version.
 */
import { createHash, type Hash } from 'node:crypto';

/** Bytes per digest piece (fixed: part of the digest's definition). */
export const DIGEST_PIECE_BYTES = 4 * 1024 * 1024;
/** Bytes of one piece's digest (sha256). */
export const PIECE_DIGEST_BYTES = 32;

/** The file digest from its pieces' digests, in order. */
export function digestOfPieces(pieces: readonly Uint8Array[]): string {
  const h = createHash('sha256');
  for (const p of pieces) h.update(p);
  return h.digest('hex');
}

/** Pieces' digests packed end to end (as stored for a resumable upload) split back into a list. */
export function unpackPieces(packed: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i + PIECE_DIGEST_BYTES <= packed.length; i += PIECE_DIGEST_BYTES) {
    out.push(packed.subarray(i, i + PIECE_DIGEST_BYTES));
  }
  return out;
}

/** A list of pieces' digests packed end to end. */
export function packPieces(pieces: readonly Uint8Array[]): Buffer {
  return Buffer.concat(pieces);
}

/** Computes the digest of bytes fed in order, in any chunk sizes (for sequential writers). */
export class PieceDigest {
  private readonly pieces: Uint8Array[] = [];
  private current: Hash = createHash('sha256');
  private fill = 0;

  update(bytes: Uint8Array): this {
    for (let off = 0; off < bytes.length;) {
      const n = Math.min(bytes.length - off, DIGEST_PIECE_BYTES - this.fill);
      this.current.update(bytes.subarray(off, off + n));
      this.fill += n;
      off += n;
      if (this.fill === DIGEST_PIECE_BYTES) this.endPiece();
    }
    return this;
  }

  /** The digest of everything fed so far (the object is not usable afterwards). */
  digest(): string {
    if (this.fill > 0) this.endPiece();
    return digestOfPieces(this.pieces);
  }

  private endPiece(): void {
    this.pieces.push(this.current.digest());
    this.current = createHash('sha256');
    this.fill = 0;
  }
}
