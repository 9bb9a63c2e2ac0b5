import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors, type TensorData } from '../safetensors/encode.js';
import { receiveUpload } from './receive-upload.js';
import { fileDigest } from '../../../test/helpers/digest.js';

let disk: string;
// tmpfs refuses O_DIRECT: the thread's buffered writes run there.
let tmpfs: string | null = null;
beforeAll(async () => {
  disk = await mkdtemp(join(tmpdir(), 'receive-'));
  if (existsSync('/dev/shm')) tmpfs = await mkdtemp('/dev/shm/receive-');
});
afterAll(async () => {
  await rm(disk, { recursive: true, force: true });
  if (tmpfs) await rm(tmpfs, { recursive: true, force: true });
});

/** The bytes as a stream of uneven chunks, like packets. */
function stream(bytes: Uint8Array): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(bytes.length - at, 1 + ((i * 7919) % 70_001));
    chunks.push(Buffer.from(bytes.subarray(at, at + n)));
    at += n;
  }
  return Readable.from(chunks);
}

const big = (n: number, nanAt = -1): TensorData[] => {
  const a = new Float32Array(n).map((_, i) => (i % 13) * 0.5);
  if (nanAt >= 0) a[nanAt] = NaN;
  return [
    { name: 'a', dtype: 'F32', shape: [n], data: a },
    { name: 'h', dtype: 'F16', shape: [3], data: Float32Array.from([1, 2, 3]) },
  ];
};

// Inline: checked and written on this thread; thread: in a worker thread (large bodies), on a
// disk (O_DIRECT) and on tmpfs (buffered).
const cases: [string, number, 'disk' | 'tmpfs'][] = [
  ['inline', Number.MAX_SAFE_INTEGER, 'disk'],
  ['thread', 0, 'disk'],
];
if (existsSync('/dev/shm')) cases.push(['thread', 0, 'tmpfs']);
describe.each(cases)('receiveUpload (%s, %s)', (_mode, threadMinBytes, where) => {
  let dir: string;
  beforeAll(() => {
    dir = where === 'disk' ? disk : tmpfs!;
  });
  /** `chunked`: no Content-Length, as with Transfer-Encoding: chunked. */
  const receive = (bytes: Uint8Array, chunked = false) =>
    receiveUpload(stream(bytes), {
      contentLength: chunked ? undefined : bytes.length,
      maxBytes: 1 << 30,
      reference: null,
      dir,
      threadMinBytes,
    });

  it('stores the exact bytes and their digest, chunked or not', async () => {
    const bytes = encodeSafetensors(big(3_000_000));
    for (const chunked of [false, true]) {
      const r = await receive(bytes, chunked);
      if (!r.ok) throw new Error(r.message);
      expect(r.digest).toBe(fileDigest(bytes));
      const out = join(dir, `stored-${chunked}`);
      await r.file.commit(out);
      expect((await readFile(out)).equals(bytes)).toBe(true);
    }
  });

  it('finds a NaN far into the body, names its element, and leaves no file behind', async () => {
    const before = (await readdir(dir)).length;
    const r = await receive(encodeSafetensors(big(3_000_000, 2_500_001)));
    expect(r).toMatchObject({ ok: false, code: 'non_finite', tensor: 'a' });
    expect(!r.ok && r.message).toMatch(/element 2500001/);
    expect((await readdir(dir)).length).toBe(before);
  });

  it('receives several uploads at once, each with its own outcome', async () => {
    const good = encodeSafetensors(big(1_500_000));
    const bad = encodeSafetensors(big(1_500_000, 1_234_567));
    const [a, b, c] = await Promise.all([receive(good), receive(bad), receive(good, true)]);
    for (const r of [a, c]) {
      if (!r!.ok) throw new Error(r!.message);
      expect(r!.digest).toBe(fileDigest(good));
      await r!.file.abort();
    }
    expect(b).toMatchObject({ ok: false, code: 'non_finite', tensor: 'a' });
    expect(!b!.ok && b!.message).toMatch(/element 1234567/);
  });

  it('refuses a body shorter or longer than its header says', async () => {
    const bytes = encodeSafetensors(big(1000));
    const short = bytes.subarray(0, bytes.length - 3);
    expect(await receive(short, true)).toMatchObject({ code: 'truncated' });
    // With a Content-Length the header's offsets are checked against it before the body.
    expect(await receive(short)).toMatchObject({ code: 'offsets_out_of_bounds' });
    const longer = Buffer.concat([bytes, Buffer.alloc(8)]);
    expect(await receive(longer, true)).toMatchObject({ code: 'file_size_mismatch' });
  });

  it('scans the stored file when tensors split elements across pieces', async () => {
    // An F16 tensor of 3 values first puts the F32 tensor at an offset of 6 bytes.
    const tensors: TensorData[] = [
      { name: 'h', dtype: 'F16', shape: [3], data: Float32Array.from([1, 2, 3]) },
      { name: 'a', dtype: 'F32', shape: [4], data: Float32Array.from([1, Infinity, 3, 4]) },
    ];
    const r = await receive(encodeSafetensors(tensors));
    expect(r).toMatchObject({ ok: false, code: 'non_finite', tensor: 'a' });
  });
});

describe('receiveUpload on a thread', () => {
  it("moves the body's own chunk buffers to the thread and copies views into shared ones", async () => {
    const bytes = encodeSafetensors(big(1_000_000));
    // A whole buffer per chunk (as node:http delivers a body), except one view into a larger buffer.
    const chunks: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += 65536) chunks.push(Buffer.from(bytes.subarray(at, at + 65536)));
    const shared = Buffer.alloc(65536 + 16, 1);
    const view = shared.subarray(8, 8 + chunks[5]!.length);
    chunks[5]!.copy(view);
    chunks[5] = view;
    const r = await receiveUpload(Readable.from(chunks), {
      contentLength: bytes.length,
      maxBytes: 1 << 30,
      reference: null,
      dir: disk,
      threadMinBytes: 0,
    });
    if (!r.ok) throw new Error(r.message);
    expect(r.digest).toBe(fileDigest(bytes));
    await r.file.abort();
    expect(chunks[4]!.buffer.byteLength).toBe(0); // moved (detached here)
    expect(shared.length).toBe(65536 + 16); // copied: the rest of its buffer stays
    expect(shared[0]).toBe(1);
  });
});
