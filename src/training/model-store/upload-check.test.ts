import { describe, expect, it } from 'vitest';
import { PieceWriter, type CheckReply, type WriterFile } from './upload-check.js';
import { fileDigest } from '../../../test/helpers/digest.js';

const PIECE = 4096;

/** A file whose writes finish only when the test lets them (`release`), recording what was written. */
function heldFile(direct = false) {
  const bytes = new Uint8Array(64 * PIECE);
  const held: (() => void)[] = [];
  const lengths: number[] = [];
  let closed = false;
  const file: WriterFile = {
    direct,
    write: (b, at) =>
      new Promise<void>((resolve) => {
        lengths.push(b.length);
        held.push(() => {
          bytes.set(b, at);
          resolve();
        });
      }),
    datasync: async () => undefined,
    close: async () => {
      closed = true;
    },
  };
  const release = () => held.splice(0).forEach((f) => f());
  return { file, bytes, held, lengths, release, closed: () => closed };
}

function writer(
  file: WriterFile,
  pieces = 2,
  tensors = [{ name: 'a', dtype: 'F32' as const, begin: 0, end: 1 << 30 }],
) {
  const replies: CheckReply[] = [];
  const w = new PieceWriter(
    { tensors, scan: true, dataStart: 0, pieceBytes: PIECE, pieces },
    Promise.resolve(file),
    (r) => replies.push(r),
  );
  return { w, replies };
}

const tick = () => new Promise((r) => setTimeout(r, 5));
const taken = (rs: CheckReply[]) => rs.reduce((n, r) => n + (r.op === 'took' ? r.bytes : 0), 0);

describe('PieceWriter', () => {
  it('takes no more than its pieces while their writes are pending, then writes every byte in place', async () => {
    const f = heldFile();
    const { w, replies } = writer(f.file);
    const data = new Uint8Array(new Float32Array(5 * (PIECE / 4)).map((_, i) => i * 0.5).buffer);
    // Odd chunk sizes across piece boundaries, one request per chunk.
    for (let at = 0; at < data.length; at += 3000)
      w.handle({ op: 'chunks', chunks: [data.slice(at, at + 3000)] });
    w.handle({ op: 'end' });
    await tick();
    // Two pieces filled and written (held): the third chunk waits, so less than 3 pieces are taken.
    expect(f.held.length).toBe(2);
    expect(taken(replies)).toBeLessThan(3 * PIECE);
    while (!replies.some((r) => r.op === 'digest')) {
      f.release();
      await tick();
    }
    expect(taken(replies)).toBe(data.length);
    expect(f.bytes.subarray(0, data.length)).toEqual(data);
    expect(replies.at(-1)).toEqual({ op: 'digest', digest: fileDigest(data, PIECE) });
  });

  it('handles requests that arrive after its queue ran empty', async () => {
    const f = heldFile();
    const { w, replies } = writer(f.file, 4);
    const data = new Uint8Array(3 * PIECE).map((_, i) => i % 7);
    w.handle({ op: 'chunks', chunks: [data.subarray(0, 100)] });
    await tick();
    // The file is open now: these run to the end without waiting, within handle itself.
    w.handle({ op: 'chunks', chunks: [data.subarray(100, 200)] });
    w.handle({ op: 'chunks', chunks: [data.subarray(200)] });
    w.handle({ op: 'end' });
    while (!replies.some((r) => r.op === 'digest')) {
      f.release();
      await tick();
    }
    expect(taken(replies)).toBe(data.length);
    expect(replies.at(-1)).toEqual({ op: 'digest', digest: fileDigest(data, PIECE) });
  });

  it('pads the last piece of a direct writer to a whole block', async () => {
    const f = heldFile(true);
    const { w, replies } = writer(f.file);
    w.handle({ op: 'chunks', chunks: [new Uint8Array(PIECE + 12)] });
    w.handle({ op: 'end' });
    while (!replies.some((r) => r.op === 'digest')) {
      f.release();
      await tick();
    }
    expect(f.lengths).toEqual([PIECE, PIECE]);
  });

  it('reports the first non-finite value with its element and writes nothing after it', async () => {
    const f = heldFile();
    const { w, replies } = writer(f.file);
    const values = new Float32Array(3 * (PIECE / 4)).fill(1);
    values[PIECE / 4 + 7] = Infinity;
    w.handle({ op: 'chunks', chunks: [new Uint8Array(values.buffer)] });
    w.handle({ op: 'end' });
    await tick();
    f.release();
    await tick();
    expect(replies).toContainEqual({ op: 'non_finite', tensor: 'a', element: PIECE / 4 + 7 });
    expect(replies.some((r) => r.op === 'digest')).toBe(false);
    expect(f.held.length).toBe(0); // only the first piece was written
  });

  it('close waits for the writes in flight, then closes the file', async () => {
    const f = heldFile();
    const { w } = writer(f.file);
    w.handle({ op: 'chunks', chunks: [new Uint8Array(2 * PIECE)] });
    await tick();
    let done = false;
    const closing = w.close().then(() => (done = true));
    await tick();
    expect(done).toBe(false);
    f.release();
    await closing;
    expect(f.closed()).toBe(true);
  });

  it('answers a failed write as an error', async () => {
    const { w, replies } = writer({
      direct: false,
      write: async () => {
        throw new Error('ENOSPC: no space left on device');
      },
      datasync: async () => undefined,
      close: async () => undefined,
    });
    w.handle({ op: 'chunks', chunks: [new Uint8Array(PIECE)] });
    w.handle({ op: 'end' });
    await tick();
    expect(replies).toContainEqual({ op: 'error', message: 'ENOSPC: no space left on device' });
    expect(replies.some((r) => r.op === 'digest')).toBe(false);
  });

  it('pauses inside a piece and resumes from the piece start to the same digest', async () => {
    const data = new Uint8Array(
      new Float32Array(5 * (PIECE / 4) + 300).map((_, i) => (i % 13) * 0.25).buffer,
    );
    // A plain file (no hold): writes land at once.
    const bytes = new Uint8Array(64 * PIECE);
    const file: WriterFile = {
      direct: false,
      write: async (b, at) => void bytes.set(b, at),
      datasync: async () => undefined,
      close: async () => undefined,
    };
    const tensors = [{ name: 'a', dtype: 'F32' as const, begin: 0, end: 1 << 30 }];
    const cut = 2 * PIECE + 1234;
    const first: CheckReply[] = [];
    const a = new PieceWriter(
      { tensors, scan: true, dataStart: 0, pieceBytes: PIECE, pieces: 2 },
      Promise.resolve(file),
      (r) => first.push(r),
    );
    a.handle({ op: 'chunks', chunks: [data.slice(0, cut)] });
    a.handle({ op: 'pause' });
    for (let i = 0; i < 200 && !first.some((r) => r.op === 'paused'); i++) await tick();
    const paused = first.find((r) => r.op === 'paused');
    if (paused?.op !== 'paused') throw new Error(`not paused: ${JSON.stringify(first)}`);
    // Two whole pieces hashed; the unfinished one written as it is, not hashed.
    expect(paused.wholeBytes).toBe(2 * PIECE);
    expect(paused.pieceDigests.length).toBe(2 * 32);
    expect(bytes.subarray(0, cut)).toEqual(data.subarray(0, cut));
    await a.close();

    const second: CheckReply[] = [];
    const b = new PieceWriter(
      {
        tensors,
        scan: true,
        dataStart: 0,
        pieceBytes: PIECE,
        pieces: 2,
        startAt: 2 * PIECE,
        pieceDigests: paused.pieceDigests,
      },
      Promise.resolve(file),
      (r) => second.push(r),
    );
    // The unfinished piece is sent again from its start, then the rest.
    b.handle({ op: 'chunks', chunks: [bytes.slice(2 * PIECE, cut), data.slice(cut)] });
    b.handle({ op: 'end' });
    for (let i = 0; i < 200 && !second.some((r) => r.op === 'digest'); i++) await tick();
    expect(second.at(-1)).toEqual({ op: 'digest', digest: fileDigest(data, PIECE) });
    expect(bytes.subarray(0, data.length)).toEqual(data);
  });
});
