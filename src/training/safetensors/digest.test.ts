import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DIGEST_PIECE_BYTES, PieceDigest, digestOfPieces, packPieces, unpackPieces } from './digest.js';

/** The snippet docs/protocol.md gives, run by the machine's Python: an independent computation. */
const PYTHON = `
import hashlib, sys

def ai_farm_digest(path, piece=4 * 1024 * 1024):
    pieces = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(piece)
            if not block:
                break
            pieces.update(hashlib.sha256(block).digest())
    return pieces.hexdigest()

for p in sys.argv[1:]:
    print(ai_farm_digest(p))
`;

const dir = mkdtempSync(join(tmpdir(), 'digest-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('model file digest', () => {
  it('equals the Python computation of docs/protocol.md, at and around piece boundaries', () => {
    const P = DIGEST_PIECE_BYTES;
    const sizes = [0, 1, 4095, P - 1, P, P + 1, 2 * P, 2 * P + 12345, 3 * P - 7];
    const ours: string[] = [];
    const paths: string[] = [];
    for (const n of sizes) {
      const bytes = randomBytes(n);
      const path = join(dir, `f-${n}`);
      writeFileSync(path, bytes);
      paths.push(path);
      // Fed in odd chunk sizes, so chunk edges never line up with piece edges.
      const d = new PieceDigest();
      for (let i = 0; i < n; i += 999_983) d.update(bytes.subarray(i, i + 999_983));
      ours.push(d.digest());
    }
    const python = execFileSync('/usr/bin/python3', ['-c', PYTHON, ...paths], { encoding: 'utf8' })
      .trim()
      .split('\n');
    expect(ours).toEqual(python);
    // An empty file has no piece: sha256 of nothing. One piece: sha256 of its sha256.
    expect(ours[0]).toBe(createHash('sha256').digest('hex'));
    const one = randomBytes(10);
    expect(new PieceDigest().update(one).digest()).toBe(
      createHash('sha256').update(createHash('sha256').update(one).digest()).digest('hex'),
    );
    // Not the plain sha256 of the file.
    expect(new PieceDigest().update(one).digest()).not.toBe(createHash('sha256').update(one).digest('hex'));
  });

  it('packs and unpacks the pieces of a resumed digest', () => {
    const pieces = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const back = unpackPieces(packPieces(pieces));
    expect(back.map((b) => Buffer.from(b).toString('hex'))).toEqual(pieces.map((b) => b.toString('hex')));
    expect(digestOfPieces(back)).toBe(digestOfPieces(pieces));
  });
});
