/**
 * Assembles the WebAssembly kernels from their `.wat` sources under src/ with wabt (the
 * WebAssembly Binary Toolkit's own assembler, compiled to JS): each `X.wat` becomes `X.wasm`
 * beside it (gitignored) and, when dist/ exists, in the same place under dist/. A source whose
 * memory import is marked `;; +shared` on its line also gets `X.shared.wasm`, the same module
 * importing a shared memory (a module must declare which kind it takes).
 *
 * Run by `npm run build`, by the tests' global setup and by the benchmarks; `npx tsx
 * scripts/build-wasm.ts` by hand.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import wabt from 'wabt';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The memory import line a `;; +shared` source declares. */
const SHARED_MARK = /^(.*\(memory [^)]*)\)(.*;; \+shared.*)$/m;

function watFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return watFiles(path);
    return e.name.endsWith('.wat') ? [path] : [];
  });
}

/** Assembles every `.wat` under src/; returns the paths written (those that changed). */
export async function buildWasm(root = ROOT): Promise<string[]> {
  const assembler = await wabt();
  const written: string[] = [];
  const emit = (source: string, text: string, out: string): void => {
    const mod = assembler.parseWat(source, text, { simd: true, threads: true });
    try {
      // wabt.js's validate() ignores the threads feature (it refuses shared memories); the
      // engine that runs the module validates it instead.
      const { buffer } = mod.toBinary({});
      if (!WebAssembly.validate(buffer)) throw new Error(`${source}: the assembled module does not validate`);
      const targets = [out];
      const dist = join(root, 'dist', relative(join(root, 'src'), out));
      if (existsSync(join(root, 'dist'))) targets.push(dist);
      for (const target of targets) {
        if (existsSync(target) && Buffer.from(buffer).equals(readFileSync(target))) continue;
        // Renamed into place: a process loading the module never sees half a file.
        mkdirSync(dirname(target), { recursive: true });
        const temp = `${target}.${process.pid}.tmp`;
        writeFileSync(temp, buffer);
        renameSync(temp, target);
        written.push(target);
      }
    } finally {
      mod.destroy();
    }
  };
  for (const source of watFiles(join(root, 'src'))) {
    const text = readFileSync(source, 'utf8');
    const base = source.slice(0, -'.wat'.length);
    emit(source, text, `${base}.wasm`);
    if (SHARED_MARK.test(text))
      emit(source, text.replace(SHARED_MARK, '$1 shared)$2'), `${base}.shared.wasm`);
  }
  return written;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const written = await buildWasm();
  console.log(`WebAssembly kernels assembled (${written.length} file(s) changed)`);
}
