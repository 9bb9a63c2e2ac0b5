import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess } from './clients/processes.js';
import { holdsStill, sleep } from './helpers/wait.js';
import { ensurePanelBuilt, launchBrowser, logIn, screenshot, WIDTHS } from './helpers/browser.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const PASSWORD = 'panel-worker-password';

/**
 * A command that trains nothing but reports like a trainer: 16 steps of 0.5 s, four per
 * epoch, with falling loss and rising accuracy (JSON lines on stdout, the progress protocol).
 */
const TRAINING_LIKE =
  'for i in $(seq 1 16); do echo "{\\"progress\\": $((i*100/16)), \\"metrics\\": {\\"loss\\": 0.$((99-i*5)), ' +
  '\\"accuracy\\": 0.$((30+i*4)), \\"current_epoch\\": $(((i+3)/4)), \\"total_epochs\\": 4}}"; sleep 0.5; done';

describe('admin panel following a real worker', () => {
  let t: TestServer;
  let browser: Browser;
  let page: Page;
  let worker: CliProcess;
  let dir: string;
  let token: string;
  /** The client ids the workers registered as. */
  const workerIds: string[] = [];
  /** The reference worker, named `name`, keeping its id in `idFile`. */
  const startWorker = (name: string, idFile: string) =>
    new CliProcess([
      'worker',
      '--server',
      t.url,
      '--token',
      token,
      '--id-file',
      join(dir, idFile),
      '--name',
      name,
      '--no-progress',
    ]);
  const more: CliProcess[] = [];

  beforeAll(async () => {
    ensurePanelBuilt();
    t = await startTestServer('sqlite', { ADMIN_PASSWORD: PASSWORD });
    dir = mkdtempSync(join(tmpdir(), 'aifarm-panel-worker-'));
    token = (await t.api('POST', '/api/tokens', { name: 'panel-workers', role: 'worker' })).body.token;
    browser = await launchBrowser();
    page = await (await browser.newContext({ viewport: WIDTHS.desktop })).newPage();
    await logIn(page, t.url, 'admin', PASSWORD);
    worker = startWorker('panel-worker', 'worker.id');
    workerIds.push((await worker.waitFor(/registered as (\S+)/))[1] as string);
  });
  afterAll(async () => {
    await Promise.all([worker, ...more].map((w) => w?.stop()));
    await browser?.close();
    await t?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const nav = (name: string) =>
    page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });
  const badge = () => page.locator('.page-head .badge').textContent();
  const progress = async () =>
    Number(await page.locator('.task-progress [role=progressbar]').getAttribute('aria-valuenow'));

  it('shows the worker connected, live', async () => {
    await nav('Clients').click();
    const row = page.locator('tr[data-client-id]');
    await expect.poll(() => row.count(), { timeout: 10_000 }).toBe(1);
    expect(await row.locator('.badge').textContent()).toBe('connected');
    await nav('Overview').click();
    await expect
      .poll(() => page.getByTestId('connected-clients').textContent())
      .toMatch(/^1\s*\/ 1 connected/);
  });

  it('watches the worker take a task created in the panel, its progress bar moving', async () => {
    await nav('Tasks').click();
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByLabel('Name (optional)').fill('watch-me');
    await page.getByLabel('Config (JSON object)').fill(JSON.stringify({ command: TRAINING_LIKE }, null, 2));
    await page.getByRole('button', { name: 'Create task' }).click();
    await page.waitForURL(/\/tasks\/\d+$/);
    await expect.poll(badge, { timeout: 15_000 }).toBe('running');

    // The bar moves without a reload: collect what it shows for a while.
    const seen: number[] = [];
    const end = Date.now() + 15_000;
    while (Date.now() < end && seen.filter((v, i) => i === 0 || v > (seen[i - 1] as number)).length < 4) {
      const v = await progress();
      if (seen.at(-1) !== v) seen.push(v);
      if (seen.length === 2) await screenshot(page, 'task-running');
      await sleep(150);
    }
    expect(seen.length).toBeGreaterThanOrEqual(4);
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    expect(seen.at(-1)).toBeGreaterThan(0);
    // Assignments by rank name the worker.
    await expect
      .poll(() => page.locator('section[aria-labelledby="assignments-by-rank"] tbody tr').count())
      .toBe(1);
  });

  it('pauses the running task (its progress stops) and resumes it', async () => {
    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(badge).toBe('paused');
    // Progress already sent may still land, and the page shows what the server has: it
    // comes to rest (the worker sends nothing while paused).
    const held = await holdsStill(progress, 2000, 30_000, 'the shown progress after the pause');
    await page.getByRole('button', { name: 'Resume' }).click();
    await expect.poll(badge).toBe('running');
    await expect.poll(progress, { timeout: 10_000 }).toBeGreaterThan(held);
  });

  it('shows the finished task with its loss and accuracy chart', async () => {
    await expect.poll(badge, { timeout: 30_000 }).toBe('completed');
    expect(await progress()).toBe(100);
    const summary = page.getByTestId('training-summary');
    await expect
      .poll(() => summary.textContent(), { timeout: 10_000 })
      .toMatch(/^\d+ epochs · loss 0\.\d+ · accuracy \d+/);
    expect(await page.locator('section[aria-labelledby="training"] canvas').count()).toBeGreaterThan(0);
    expect(
      await page
        .locator('.assignments, section[aria-labelledby="assignments-by-rank"] .badge')
        .first()
        .textContent(),
    ).toBe('completed');
    await screenshot(page, 'task-training');
    await nav('Overview').click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await expect
      .poll(() => page.locator('.count[data-status="completed"]').textContent(), { timeout: 10_000 })
      .toBe('1');
    await screenshot(page, 'overview-worker');
  });

  it('follows a two-rank training task round by round, with its chart and model', async () => {
    const second = startWorker('panel-worker-2', 'worker-2.id');
    more.push(second);
    workerIds.push((await second.waitFor(/registered as (\S+)/))[1] as string);

    await nav('Tasks').click();
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByLabel('Type').fill('train_mnist');
    await page.getByLabel('Name (optional)').fill('digits');
    await page.getByLabel('Ranks').fill('2');
    // The API's verdict on a config key shows beside the config box.
    await page.getByLabel('Config (JSON object)').fill(JSON.stringify({ rounds: 0 }));
    await page.getByRole('button', { name: 'Create task' }).click();
    await expect
      .poll(() => page.locator('#task-config-error').textContent())
      .toMatch(/^body\/config\/rounds must be >= 1/);
    const config = { rounds: 2, epochs: 1, batch_size: 32, aggregation: { strategy: 'fedavg' }, seed: 1 };
    await page.getByLabel('Config (JSON object)').fill(JSON.stringify(config, null, 2));
    await page.getByRole('button', { name: 'Create task' }).click();
    await page.waitForURL(/\/tasks\/\d+$/);

    await expect.poll(badge, { timeout: 15_000 }).toBe('running');
    const ranks = page.locator('section[aria-labelledby="assignments-by-rank"] tbody tr');
    await expect.poll(() => ranks.count(), { timeout: 10_000 }).toBe(2);
    await expect.poll(badge, { timeout: 90_000 }).toBe('completed');
    const summary = page.getByTestId('training-summary');
    await expect
      .poll(() => summary.textContent(), { timeout: 10_000 })
      .toMatch(/^2 of 2 rounds · loss \d\.\d{4} · accuracy \d+\.\d% · held-out accuracy \d+\.\d%$/);
    expect(await page.locator('details.rounds tbody tr').count()).toBe(2);
    // Who trained in each round: both workers, each linked to its client page.
    for (const round of [1, 2]) {
      const trained = page.getByTestId(`round-${round}`).locator('.round-client');
      await expect.poll(() => trained.count(), { timeout: 10_000 }).toBe(2);
      expect((await trained.locator('a').allTextContents()).sort()).toEqual([...workerIds].sort());
      for (const id of workerIds)
        expect(await trained.getByRole('link', { name: id }).getAttribute('href')).toBe(
          `/clients/${encodeURIComponent(id)}`,
        );
      expect(await trained.evaluateAll((els) => els.map((e) => e.getAttribute('data-state')))).toEqual([
        'trained',
        'trained',
      ]);
    }
    expect(await page.locator('section[aria-labelledby="training"] canvas').count()).toBeGreaterThan(0);
    const download = page.getByRole('link', { name: 'Download model' });
    await download.waitFor();
    const id = page.url().split('/').pop();
    expect(await download.getAttribute('href')).toBe(`/api/tasks/${id}/model`);
    const model = await page.evaluate(async (href) => (await fetch(href)).status, `/api/tasks/${id}/model`);
    expect(model).toBe(200);
    await screenshot(page, 'task-rounds');
  }, 150_000);
});
