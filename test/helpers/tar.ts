import { gzipSync } from 'node:zlib';

/** One entry of a hand-made tar archive: any name, type and link, as an attacker would write. */
export interface RawEntry {
  name: string;
  /** ustar type flag: '0' file, '1' hard link, '2' symlink, '3' char device, '4' block device, '5' dir, '6' FIFO. */
  type?: string;
  data?: string | Buffer;
  linkname?: string;
  /** Size written in the header (default: the data's length); a lie makes a bomb header. */
  declaredSize?: number;
  mode?: number;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

/** A ustar header block, its checksum computed. */
function header(e: RawEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(e.name, 0, 100, 'utf8');
  h.write(octal(e.mode ?? (e.type === '5' ? 0o755 : 0o644), 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(e.type ?? '0', 156, 'ascii');
  h.write(e.linkname ?? '', 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

/** A tar.gz of exactly these entries, with no checks at all (for testing the checks). */
export function rawTarGz(entries: readonly RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? '');
    const size = e.declaredSize ?? data.length;
    blocks.push(header(e, size));
    if (e.declaredSize === undefined && data.length > 0) {
      blocks.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

/** The hostile archives every code-archive check must refuse, with what the refusal names. */
export const MALICIOUS_ARCHIVES: readonly { what: string; entries: RawEntry[]; names: string }[] = [
  { what: 'an absolute path', entries: [{ name: '/tmp/evil.py', data: 'x' }], names: 'absolute path' },
  { what: "a '..' path", entries: [{ name: 'a/../../evil.py', data: 'x' }], names: "'..'" },
  {
    what: 'a symbolic link leading out',
    entries: [{ name: 'out', type: '2', linkname: '../../etc' }],
    names: 'leads out',
  },
  {
    what: 'an absolute symbolic link',
    entries: [{ name: 'passwd', type: '2', linkname: '/etc/passwd' }],
    names: 'leads out',
  },
  {
    what: 'a file written through a symbolic link',
    entries: [
      { name: 'd', type: '2', linkname: '.' },
      { name: 'd/x.py', data: 'x' },
    ],
    names: 'through a symbolic link',
  },
  {
    what: 'a hard link leading out',
    entries: [{ name: 'shadow', type: '1', linkname: '/etc/shadow' }],
    names: 'hard link',
  },
  { what: 'a character device', entries: [{ name: 'null', type: '3' }], names: 'CharacterDevice' },
  { what: 'a block device', entries: [{ name: 'sda', type: '4' }], names: 'BlockDevice' },
  { what: 'a FIFO', entries: [{ name: 'pipe', type: '6' }], names: 'FIFO' },
];
