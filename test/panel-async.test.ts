import { describe, expect, it } from 'vitest';
import { browserForSuite, logIn, screenshot, watchErrors, WIDTHS } from './helpers/browser.js';
import { model } from './helpers/safetensors.js';
import { farmPerTest, startTraining } from './helpers/training.js';

const PASSWORD = 'panel-async-password';
const trainingFarm = farmPerTest();

/** The task page of an async training task: its versions, with their updates' staleness. */
describe('admin panel: async task page', () => {
  const browser = browserForSuite();

  it('shows each published version with a staleness histogram', async () => {
    const farm = await trainingFarm('sqlite', 3, { ADMIN_PASSWORD: PASSWORD });
    const t = await startTraining(farm, { rounds: 3, mode: 'async', buffer_size: 2, staleness: 'constant' });
    const put = async (rank: number, from: number) => {
      const res = await t.put(rank, model([1, 1, 1, 1], [1, 0, 0, -1]), { round: from, numSamples: 10 });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    };
    // Version 1 from two fresh updates; version 2 from one fresh and one of staleness 1.
    await put(0, 1);
    await put(1, 1);
    await t.rank(0).client.next((m) => m.type === 'round_start' && m.round === 2, 20_000);
    await put(2, 1);
    await put(0, 2);
    await t.rank(0).client.next((m) => m.type === 'round_start' && m.round === 3, 20_000);

    const context = await browser().newContext({ viewport: WIDTHS.desktop });
    const page = await context.newPage();
    await logIn(page, farm.ts.url, 'admin', PASSWORD);
    // Watched after the login (the page's session probe before it is a 401 by design).
    const errors = watchErrors(page);
    await page.goto(`${farm.ts.url}/tasks/${t.taskId}`);
    const versions = page.getByTestId('async-versions');
    await versions.waitFor({ timeout: 20_000 });
    await expect.poll(() => page.getByTestId('version-2').count(), { timeout: 20_000 }).toBe(1);
    const histogram = (v: number) =>
      page.getByTestId(`version-${v}`).getByRole('img').getAttribute('aria-label');
    // Version r is what round r produced (docs/architecture.md, glossary).
    expect(await histogram(1)).toBe('τ=0: 2, τ=1: 0');
    expect(await histogram(2)).toBe('τ=0: 1, τ=1: 1');
    await screenshot(page, 'task-async-versions');
    expect(errors).toEqual([]);
    await context.close();
  });
});
