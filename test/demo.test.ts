import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, type CliResult } from './clients/processes.js';

// The README's main job, as a new user runs it: `ai-farm demo` starts a server, three
// workers and a three-rank FedAvg train_mnist task, and must reach 90% held-out accuracy.

const dir = mkdtempSync(join(tmpdir(), 'aifarm-demo-test-'));

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs `ai-farm demo ARGS` in its own process group, so that on a timeout the demo and the
 * workers it started are all killed: none is left running after the test.
 */
function runDemo(args: string[], timeoutMs: number): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, 'demo', ...args], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(-child.pid!, 'SIGKILL');
      reject(new Error(`ai-farm demo timed out\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('ai-farm demo', () => {
  it('trains MNIST on three workers to >= 90% held-out accuracy and exits 0 with --exit', async () => {
    const dataDir = join(dir, 'data');
    // About 20-40 s alone on two cores; more while other test files share them.
    const r = await runDemo(['--exit', '--data-dir', dataDir], 120_000);
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.code, out).toBe(0);
    const m = /accuracy=(\d\.\d+)/.exec(r.stdout);
    expect(m, out).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(0.9);
    // Every round was shown (plain lines: stdout is not a terminal), and the panel's login.
    expect(r.stdout).toMatch(/round 5\/5 closed: held-out accuracy/);
    expect(r.stdout).toMatch(
      new RegExp(`Final model \\(safetensors, PyTorch names\\): ${dataDir}/\\S+\\.safetensors`),
    );
    expect(r.stdout).toMatch(/Admin panel: http:\/\/127\.0\.0\.1:\d+\/ {2}user "admin", password \S+/);
    // A second run refuses a used data directory rather than mixing states.
    const again = await runCli(['demo', '--exit', '--data-dir', dataDir], {}, 20_000);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/not empty/);
  }, 150_000);

  it('--json ends with one JSON object; --stragglers make the last workers slow; --target is reported', async () => {
    const dataDir = join(dir, 'json');
    const r = await runDemo(
      [
        '--json',
        '--data-dir',
        dataDir,
        '--workers',
        '2',
        '--rounds',
        '2',
        '--stragglers',
        '1',
        '--slowdown',
        '2',
        '--target',
        '0.5',
      ],
      120_000,
    );
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.code, out).toBe(0);
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(last).toMatchObject({
      mode: 'sync',
      status: 'completed',
      workers: 2,
      stragglers: 1,
      slowdown: 2,
      rounds: 2,
      target: 0.5,
    });
    expect(last.accuracy).toBeGreaterThanOrEqual(0.5);
    expect(last.seconds).toBeGreaterThan(0);
    // Two rounds of FedAvg reach 50% in round 1 or 2, some seconds after the task's creation.
    expect([1, 2]).toContain(last.target_round);
    expect(last.time_to_target_s).toBeGreaterThan(0);
    expect(last.time_to_target_s).toBeLessThanOrEqual(last.seconds);
    expect(r.stdout).toMatch(/1 of them train 2x slower/);
    expect(r.stdout).toMatch(
      /Held-out accuracy first reached 50% in round [12], [\d.]+ s after the task was created/,
    );
    // --json implies --exit: the command returned by itself.
    const bad = await runCli(['demo', '--workers', '2', '--stragglers', '3'], {}, 20_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--stragglers \(3\) is more than --workers \(2\)/);
  }, 150_000);
});
