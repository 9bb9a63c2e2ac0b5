import { createHash } from 'node:crypto';

/**
 * The model file digest (sha256 over 4 MiB pieces, then over the pieces' digests) computed
 * here in one piece of code of its own, for tests to check the server's against (`piece`: the
 * piece size, for tests of a writer with small pieces).
 */
export function fileDigest(bytes: Uint8Array, piece = 4 * 1024 * 1024): string {
  const all = createHash('sha256');
  for (let i = 0; i < bytes.length; i += piece) {
    all.update(
      createHash('sha256')
        .update(bytes.subarray(i, i + piece))
        .digest(),
    );
  }
  return all.digest('hex');
}
