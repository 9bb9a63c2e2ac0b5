import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts a worker thread from `script`, the URL of its compiled `.js` file. From dist/ that
 * file exists and runs as is; under the test runner only the `.ts` source exists, and Node
 * 20 does not apply `--import tsx` to a worker's entry, so a two-line bootstrap registers
 * tsx's loader first and then imports the source.
 */
export function startThread(script: URL, options: WorkerOptions = {}): Worker {
  if (existsSync(fileURLToPath(script))) return new Worker(script, options);
  const ts = new URL(script.href.replace(/\.js$/, '.ts'));
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as {
    exports: Record<string, { import: { default: string } }>;
  };
  const api = pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api']!.import.default)).href;
  const bootstrap = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(ts.href)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}

/** Runs a one-shot thread from `script` (as startThread) and resolves with the first message it posts. */
export function runThread<T>(script: URL, workerData: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const w = startThread(script, { workerData });
    let settled = false;
    w.once('message', (m: T) => {
      settled = true;
      resolve(m);
      void w.terminate();
    });
    w.once('error', (err) => {
      if (!settled) reject(err);
      settled = true;
    });
    w.once('exit', (code) => {
      if (!settled) reject(new Error(`thread ${script.pathname} exited with code ${code}`));
      settled = true;
    });
  });
}
