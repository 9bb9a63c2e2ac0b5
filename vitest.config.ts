import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Upper bounds against hangs, not speed checks: a test that takes 10 s on a quiet machine
    // takes five times as long when the machine is loaded (load average 15 on two cores).
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: files run in parallel, two at a time.
    maxWorkers: 2,
    pool: 'forks',
  },
});
