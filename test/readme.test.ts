import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';

const run = promisify(execFile);
const README = readFileSync(join(import.meta.dirname, '../README.md'), 'utf8');

/** The text of a `## title` section, up to the next `## `. */
function section(title: string): string {
  const start = README.indexOf(`## ${title}`);
  if (start < 0) throw new Error(`README has no section "${title}"`);
  const end = README.indexOf('\n## ', start + 3);
  return README.slice(start, end < 0 ? undefined : end);
}
const shBlocks = (text: string) => [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string);

describe('README', () => {
  it('opens with a quick start of exactly two commands: run the demo, run every test', () => {
    const blocks = shBlocks(section('Quick start'));
    expect(blocks).toHaveLength(1);
    const commands = (blocks[0] as string).trim().split('\n');
    expect(commands).toEqual(['npm install && npx ai-farm demo', 'npm test']);
    // The quick start is the first section.
    expect(README.indexOf('## Quick start')).toBe(README.indexOf('## '));
  });

  it('links only to documents that exist', () => {
    for (const [, target] of README.matchAll(/\]\(((?:[\w.-]+\/)*[\w.-]+\.md)\)/g)) {
      expect(() => readFileSync(join(import.meta.dirname, '..', target as string)), target).not.toThrow();
    }
  });

  describe('every curl command of "Using the API with curl", run against a fresh server', () => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer('sqlite');
    });
    afterAll(async () => t?.stop());

    const commands = shBlocks(section('Using the API with curl'))
      .map((block) => block.replace(/\\\n\s*/g, ' '))
      .flatMap((block) => block.split('\n'))
      .map((line) => line.trim())
      .filter((line) => line.startsWith('curl '));

    it('has commands for each thing a new user does', () => {
      const all = commands.join('\n');
      expect(all).toMatch(/-X POST \S+\/api\/tasks /); // create
      expect(all).toMatch(/\/api\/tasks\n/); // list
      expect(all).toMatch(/\/api\/tasks\?status=/); // filter
      expect(all).toMatch(/\/api\/tasks\/1\n/); // read
      expect(all).toMatch(/-X PUT \S+\/api\/tasks\/1\/status/); // change
      expect(all).toMatch(/-X DELETE /); // delete
      expect(all).toMatch(/\/api\/clients/); // clients
    });

    it('runs each one in order with the answer the README promises', async () => {
      expect(commands.length).toBeGreaterThan(8);
      for (const line of commands) {
        const expected = /#\s*->\s*(\d{3})\s*$/.exec(line)?.[1];
        const command = line.replace(/\s*#.*$/, '').replaceAll('http://localhost:8000', t.url);
        // The status goes on a last line of its own, after the body.
        const { stdout } = await run('bash', ['-c', `${command} -w '\\n%{http_code}'`], {
          env: { ...process.env, TOKEN: t.adminToken },
        });
        const status = stdout.slice(stdout.lastIndexOf('\n') + 1);
        if (expected) expect(status, line).toBe(expected);
        else expect(status, line).toMatch(/^2\d\d$/);
        if (line.includes('-X POST'))
          expect(JSON.parse(stdout.slice(0, stdout.lastIndexOf('\n')))).toMatchObject({
            id: 1,
            status: 'pending',
          });
      }
    });
  });
});
