/**
 * The package as a user installs it (issue 11 point 11): `npm pack`, unpacked into a separate
 * folder's node_modules, and `import 'ai-farm'` / `'ai-farm/sdk'` from there, in a child process,
 * JavaScript and TypeScript. dist/ is kept fresh by test/global-setup.ts.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');

describe('the ai-farm package', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ai-farm-package-'));
    // The build already ran; pack what `files` ships without running it again.
    const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
      cwd: ROOT,
      timeout: 120_000,
    });
    const [packed] = JSON.parse(stdout) as { filename: string }[];
    const modules = join(dir, 'node_modules');
    await mkdir(join(modules, 'ai-farm'), { recursive: true });
    await run('tar', [
      '-xzf',
      join(dir, packed!.filename),
      '-C',
      join(modules, 'ai-farm'),
      '--strip-components=1',
    ]);
    // Its dependencies as npm would install them: the project's own, linked (no network here).
    for (const name of await readdir(join(ROOT, 'node_modules'))) {
      if (name === 'ai-farm' || name.startsWith('.')) continue;
      await symlink(join(ROOT, 'node_modules', name), join(modules, name));
    }
    await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'user-app', type: 'module' }));
  }, 180_000);
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('ships dist/index.js and its types, and no @fastify/cookie', async () => {
    const pkg = JSON.parse(await readFile(join(dir, 'node_modules/ai-farm/package.json'), 'utf8')) as {
      main: string;
      types: string;
      exports: Record<string, string>;
      dependencies: Record<string, string>;
    };
    const files = await readdir(join(dir, 'node_modules/ai-farm/dist'));
    expect(files).toContain('index.js');
    expect(files).toContain('index.d.ts');
    expect(pkg.main).toBe('dist/index.js');
    expect(pkg.exports['.']).toBe('./dist/index.js');
    expect(pkg.dependencies).not.toHaveProperty('@fastify/cookie');
  });

  it("imports 'ai-farm' and 'ai-farm/sdk' from another folder", async () => {
    await writeFile(
      join(dir, 'check.mjs'),
      `import * as farm from 'ai-farm';
import * as sdk from 'ai-farm/sdk';
const client = new farm.ApiClient({ baseUrl: 'http://127.0.0.1:1', token: 'afm_x' });
console.log(JSON.stringify({
  worker: typeof farm.WorkerClient,
  api: typeof client.call,
  same: farm.WorkerClient === sdk.WorkerClient,
  max: farm.MAX_NUM_SAMPLES,
}));`,
    );
    const { stdout } = await run(process.execPath, ['check.mjs'], { cwd: dir, timeout: 60_000 });
    expect(JSON.parse(stdout)).toEqual({
      worker: 'function',
      api: 'function',
      same: true,
      max: 1_000_000_000,
    });
  });

  it('gives TypeScript users its types', async () => {
    await writeFile(
      join(dir, 'check.mts'),
      `import { ApiClient, type Task, type ClientMessage } from 'ai-farm';
const c: ApiClient = new ApiClient({ baseUrl: 'http://127.0.0.1:1', token: 'afm_x' });
const t: Pick<Task, 'id' | 'status'> = { id: 1, status: 'pending' };
const m: ClientMessage['type'] = 'task_request';
export { c, t, m };
`,
    );
    const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
    const args = [
      '--noEmit',
      '--strict',
      '--skipLibCheck',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
    ];
    const r = await run(process.execPath, [tsc, ...args, '--target', 'es2022', 'check.mts'], {
      cwd: dir,
      timeout: 120_000,
    }).catch((e: { stdout: string; stderr: string }) => ({
      stdout: e.stdout,
      stderr: e.stderr,
      failed: true,
    }));
    expect(r, JSON.stringify(r)).not.toHaveProperty('failed');
  }, 150_000);
});
