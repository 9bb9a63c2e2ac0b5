import { describe, expect, it } from 'vitest';
import { isAggregatable } from './dtypes.js';
import { compatible, findDuplicateTopLevelKey, parseHeader, type SafetensorsHeader } from './header.js';
import { encodeSafetensors } from './encode.js';

/** Builds a file from a raw JSON header text and a body of `bodyBytes` zero bytes. */
function rawFile(json: string, bodyBytes: number): Buffer {
  const text = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + text.length + bodyBytes);
  out.writeBigUInt64LE(BigInt(text.length), 0);
  text.copy(out, 8);
  return out;
}

function parse(buf: Buffer, options = {}): ReturnType<typeof parseHeader> {
  return parseHeader(buf, buf.length, options);
}

function codeOf(r: ReturnType<typeof parseHeader>): string {
  return r.ok ? 'ok' : r.code;
}

describe('parseHeader', () => {
  it('parses an encoded file, ordering tensors by offset', () => {
    const buf = encodeSafetensors(
      [
        { name: 'b', dtype: 'F32', shape: [2, 3], data: new Float32Array(6) },
        { name: 'a', dtype: 'BF16', shape: [3], data: new Uint16Array(3) },
        { name: 'scalar', dtype: 'F16', shape: [], data: new Uint16Array(1) },
        { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      ],
      { format: 'pt' },
    );
    const r = parse(buf);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const h = r.header;
    expect(h.tensors.map((t) => [t.name, t.dtype, t.shape, t.numel, t.begin, t.end])).toEqual([
      ['b', 'F32', [2, 3], 6, 0, 24],
      ['a', 'BF16', [3], 3, 24, 30],
      ['scalar', 'F16', [], 1, 30, 32],
      ['empty', 'F32', [0, 4], 0, 32, 32],
    ]);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.dataStart % 8).toBe(0);
    expect(h.fileBytes).toBe(buf.length);
    expect(h.bufferBytes).toBe(32);
  });

  it('accepts a hand-written header with offsets out of key order', () => {
    const json =
      '{"y":{"dtype":"U8","shape":[3],"data_offsets":[4,7]},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    const r = parse(rawFile(json, 7));
    expect(r.ok && r.header.tensors.map((t) => t.name)).toEqual(['x', 'y']);
  });

  const t = (name: string, dtype: string, shape: unknown, offsets: unknown): string =>
    `"${name}":{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offsets)}}`;

  it.each([
    ['truncated', Buffer.from([1, 2, 3])],
    [
      'invalid_utf8',
      (() => {
        const b = rawFile('{"a":1}', 0);
        b[9] = 0xff;
        return b;
      })(),
    ],
    ['invalid_json', rawFile('{"a":', 0)],
    ['not_object', rawFile('[1,2]', 0)],
    ['duplicate_tensor', rawFile(`{${t('a', 'F32', [1], [0, 4])},${t('a', 'F32', [1], [4, 8])}}`, 8)],
    ['duplicate_tensor', rawFile(`{${t('a', 'F32', [1], [0, 4])},${t('\\u0061', 'F32', [1], [4, 8])}}`, 8)],
    ['invalid_metadata', rawFile(`{"__metadata__":{"k":1},${t('a', 'F32', [1], [0, 4])}}`, 4)],
    ['invalid_entry', rawFile('{"a":3}', 0)],
    ['unknown_dtype', rawFile(`{${t('a', 'F31', [1], [0, 4])}}`, 4)],
    ['invalid_shape', rawFile(`{${t('a', 'F32', [-1], [0, 4])}}`, 4)],
    ['invalid_shape', rawFile(`{${t('a', 'F32', [1.5], [0, 4])}}`, 4)],
    ['invalid_offsets', rawFile(`{${t('a', 'F32', [1], [4, 0])}}`, 4)],
    ['invalid_offsets', rawFile(`{${t('a', 'F32', [1], [0])}}`, 4)],
    ['size_mismatch', rawFile(`{${t('a', 'F32', [2], [0, 4])}}`, 4)],
    ['offsets_out_of_bounds', rawFile(`{${t('a', 'F32', [1], [0, 4])}}`, 2)],
    ['overlap', rawFile(`{${t('a', 'F32', [2], [0, 8])},${t('b', 'F32', [1], [4, 8])}}`, 8)],
    ['gap', rawFile(`{${t('a', 'F32', [1], [0, 4])},${t('b', 'F32', [1], [8, 12])}}`, 12)],
    ['gap', rawFile(`{${t('a', 'F32', [1], [4, 8])}}`, 8)],
    ['file_size_mismatch', rawFile(`{${t('a', 'F32', [1], [0, 4])}}`, 6)],
  ])('reports %s', (code, buf) => {
    expect(codeOf(parse(buf))).toBe(code);
  });

  it('checks the header length against the limit and the file size', () => {
    const buf = rawFile(`{${t('a', 'F32', [1], [0, 4])}}`, 4);
    expect(codeOf(parse(buf, { maxHeaderBytes: 10 }))).toBe('header_too_large');
    expect(codeOf(parseHeader(buf, 20))).toBe('header_exceeds_file');
    const huge = Buffer.alloc(8);
    huge.writeBigUInt64LE(2n ** 63n, 0);
    expect(codeOf(parseHeader(huge, 100))).toBe('header_too_large');
    expect(codeOf(parseHeader(buf.subarray(0, 12), buf.length))).toBe('truncated');
  });

  it('names the offending tensor', () => {
    const r = parse(rawFile(`{${t('w', 'F32', [3], [0, 4])}}`, 4));
    expect(r).toMatchObject({ ok: false, code: 'size_mismatch', tensor: 'w' });
  });
});

describe('findDuplicateTopLevelKey', () => {
  it('ignores nested keys and string values', () => {
    expect(findDuplicateTopLevelKey('{"a":{"a":1,"b":"a"},"b":["a","\\"a"],"c":"b"}')).toBeUndefined();
    expect(findDuplicateTopLevelKey('{ "a" : 1 , "b":2, "a":3}')).toBe('a');
  });
});

describe('compatible', () => {
  const header = (tensors: [string, 'F32' | 'F16', number[]][]): SafetensorsHeader => {
    const r = parse(
      encodeSafetensors(
        tensors.map(([name, dtype, shape]) => ({
          name,
          dtype,
          shape,
          data: new Uint8Array(shape.reduce((a, b) => a * b, 1) * (dtype === 'F32' ? 4 : 2)),
        })),
      ),
    );
    if (!r.ok) throw new Error(r.message);
    return r.header;
  };

  it('accepts the same tensors in another order', () => {
    const a = header([
      ['x', 'F32', [2]],
      ['y', 'F16', [3]],
    ]);
    const b = header([
      ['y', 'F16', [3]],
      ['x', 'F32', [2]],
    ]);
    expect(compatible(a, b)).toEqual({ ok: true });
  });

  it('names the first mismatch', () => {
    const a = header([
      ['x', 'F32', [2]],
      ['y', 'F16', [3]],
    ]);
    expect(compatible(a, header([['x', 'F32', [2]]]))).toMatchObject({ code: 'missing_tensor', tensor: 'y' });
    expect(
      compatible(
        a,
        header([
          ['x', 'F16', [2]],
          ['y', 'F16', [3]],
        ]),
      ),
    ).toMatchObject({
      code: 'dtype_mismatch',
      tensor: 'x',
    });
    expect(
      compatible(
        a,
        header([
          ['x', 'F32', [2]],
          ['y', 'F16', [1, 3]],
        ]),
      ),
    ).toMatchObject({
      code: 'shape_mismatch',
      tensor: 'y',
    });
    const extra = header([
      ['x', 'F32', [2]],
      ['y', 'F16', [3]],
      ['z', 'F32', [1]],
    ]);
    expect(compatible(a, extra)).toMatchObject({ code: 'tensor_count', tensor: 'z' });
  });

  it('says which dtypes aggregate', () => {
    expect(['F32', 'F16', 'BF16', 'F64', 'I64', 'U8'].map((d) => isAggregatable(d as 'F32'))).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
    ]);
  });
});
