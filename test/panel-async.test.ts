import { describe, expect, it } from 'vitest';
import { insertTaskEvent } from '../src/storage/task-repo.js';
import { toDbTime } from '../src/storage/values.js';
import { browserForSuite, logIn, screenshot, watchErrors, WIDTHS } from './helpers/browser.js';
import { model } from './helpers/safetensors.js';
import { farmPerTest, startTraining, type TrainingFarm } from './helpers/training.js';

const PASSWORD = 'panel-async-password';
const trainingFarm = farmPerTest();

/** The task pages of training tasks: async versions with their staleness, who trained in each round. */
describe('admin panel: training task page', () => {
  const browser = browserForSuite();

  /** Opens task `id`'s page logged in as admin; `errors` collects the page's errors from then on. */
  const openTaskPage = async (farm: TrainingFarm, id: number) => {
    const context = await browser().newContext({ viewport: WIDTHS.desktop });
    const page = await context.newPage();
    await logIn(page, farm.ts.url, 'admin', PASSWORD);
    // Watched after the login (the page's session probe before it is a 401 by design).
    const errors = watchErrors(page);
    await page.goto(`${farm.ts.url}/tasks/${id}`);
    return { page, errors, close: () => context.close() };
  };

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

    const { page, errors, close } = await openTaskPage(farm, t.taskId);
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
    await close();
  });

  it('shows per round the clients sampled, marking those whose update is awaited, late or missing', async () => {
    const farm = await trainingFarm('sqlite', 2, { ADMIN_PASSWORD: PASSWORD });
    const t = await startTraining(farm, { rounds: 2 });
    const [a, b] = t.ranks.map((r) => r.clientId) as [string, string];
    // The events a sampling server writes (round_sampled, and update_late when over-selecting).
    const db = farm.ts.server.database.db;
    const event = (kind: string, data: unknown) =>
      insertTaskEvent(db, { task_id: t.taskId, at: toDbTime(new Date()), kind, message: kind, data });
    const sampled = (round: number, ids: [string, number][]) =>
      event('round_sampled', {
        round,
        method: 'uniform',
        eligible: 3,
        sampled: ids.map(([client_id, rank]) => ({ client_id, rank, reason: 'sampled' })),
      });
    await sampled(1, [
      [a, 0],
      [b, 1],
      ['spare-client', 2],
      ['gone-client', 3],
    ]);
    await event('update_late', { round: 1, rank: 2, client_id: 'spare-client' });
    await sampled(2, [
      [a, 0],
      [b, 1],
    ]);
    for (const rank of [0, 1])
      expect((await t.put(rank, model([1, 1, 1, 1], [1, 0, 0, -1]))).status).toBe(201);
    await t.rank(0).client.next((m) => m.type === 'round_start' && m.round === 2, 20_000);
    expect((await t.put(0, model([1, 1, 1, 1], [1, 0, 0, -1]), { round: 2 })).status).toBe(201);

    const { page, errors, close } = await openTaskPage(farm, t.taskId);
    const clients = (round: number) =>
      page
        .getByTestId(`round-${round}`)
        .locator('.round-client')
        .evaluateAll((els) =>
          els.map((e) => `${e.querySelector('a')?.textContent}:${e.getAttribute('data-state')}`),
        );
    await expect.poll(() => clients(2), { timeout: 20_000 }).toEqual([`${a}:trained`, `${b}:waiting`]);
    expect(await clients(1)).toEqual([
      `${a}:trained`,
      `${b}:trained`,
      'spare-client:late',
      'gone-client:missing',
    ]);
    expect(
      await page.getByTestId('round-1').getByRole('link', { name: 'spare-client' }).getAttribute('href'),
    ).toBe('/clients/spare-client');
    await screenshot(page, 'task-round-clients');
    expect(errors).toEqual([]);
    await close();
  });
});
