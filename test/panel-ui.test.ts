import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upsertClient } from '../src/storage/client-repo.js';
import { insertTaskEvents } from '../src/storage/task-repo.js';
import { toDbTime } from '../src/storage/values.js';
import {
  ensurePanelBuilt,
  launchBrowser,
  logIn,
  screenshot,
  watchErrors,
  WIDTHS,
} from './helpers/browser.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { RawClient, systemInfo } from './helpers/ws-client.js';

const PASSWORD = 'panel-test-password';

/**
 * Two workers as the original client describes itself, so the clients pages have something
 * to show: gpu-box-1 connected for real (a WebSocket held open: "connected" is whether some
 * instance holds the client's socket), laptop-7 known from an earlier visit.
 */
async function addClients(t: TestServer): Promise<RawClient> {
  const now = toDbTime(new Date());
  const base = {
    last_seen: now,
    registered_at: now,
    session_info: JSON.stringify({ total_tasks_completed: 3 }),
  };
  await upsertClient(t.server.database.db, {
    ...base,
    id: 'gpu-box-1',
    hostname: 'gpu-box-1.lab',
    cpu_info: JSON.stringify({ brand: 'AMD Ryzen 9 7950X', cores_physical: 16, cores_logical: 32 }),
    ram_info: JSON.stringify({ total: 64 * 2 ** 30, available: 40 * 2 ** 30, percent: 37.5 }),
    gpu_info: JSON.stringify([{ id: 0, name: 'RTX 4090', load: 0.81, memory: { total: 24564, used: 9000 } }]),
    utilization: JSON.stringify({
      cpu_utilization: 42,
      ram_utilization: 37.5,
      gpu_utilization: [{ id: 0, utilization: 81, memory_used: 9000 }],
    }),
    status: 'active',
    connected: 1,
  });
  await upsertClient(t.server.database.db, {
    ...base,
    id: 'laptop-7',
    hostname: 'laptop-7',
    cpu_info: JSON.stringify({
      brand: 'Intel Core i7-1165G7',
      cores_physical: 4,
      cores_logical: 8,
      usage_percent: 12,
    }),
    ram_info: JSON.stringify({ total: 16 * 2 ** 30, percent: 71 }),
    gpu_info: 'null',
    status: 'inactive',
    connected: 0,
  });
  const token = await t.api('POST', '/api/tokens', { name: 'panel-gpu-box', role: 'worker' });
  const ws = await RawClient.connect(t.server.wsUrl, token.body.token);
  ws.send({
    type: 'register',
    msg_id: 'reg',
    ...systemInfo('gpu-box-1'),
    hostname: 'gpu-box-1.lab',
    cpu: { brand: 'AMD Ryzen 9 7950X', cores_physical: 16, cores_logical: 32, usage_percent: 42 },
    ram: { total: 64 * 2 ** 30, available: 40 * 2 ** 30, used: 24 * 2 ** 30, percent: 37.5 },
    gpu: [{ id: 0, name: 'RTX 4090', load: 0.81, memory: { total: 24564, used: 9000, free: 15564 } }],
    // Runs no type the tests create, so their tasks stay where the tests expect them.
    task_types: ['render'],
  });
  await ws.type('registered');
  return ws;
}

/** A link of the main navigation. */
const nav = (page: Page, name: string) =>
  page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });

describe('admin panel in a real browser', () => {
  let t: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let errors: string[];
  let gpuBox: RawClient | undefined;

  beforeAll(async () => {
    ensurePanelBuilt();
    t = await startTestServer('sqlite', { ADMIN_PASSWORD: PASSWORD });
    gpuBox = await addClients(t);
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: WIDTHS.desktop });
    page = await context.newPage();
    errors = watchErrors(page);
  });
  afterAll(async () => {
    await browser?.close();
    gpuBox?.close();
    await t?.stop();
  });

  it('refuses a wrong password, then logs in and goes live', async () => {
    await page.goto(t.url + '/');
    await expect.poll(() => page.getByRole('heading', { name: 'AI Farm' }).isVisible()).toBe(true);
    await screenshot(page, 'login');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('Wrong username or password');
    expect(await page.getByLabel('Password').inputValue()).toBe('');

    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await expect.poll(() => page.getByRole('status').filter({ hasText: 'Live' }).count()).toBe(1);
    expect(await page.getByTestId('connected-clients').textContent()).toMatch(/^1\s*\/ 2 connected/);
    // The session cookie is out of the page's reach.
    expect(await page.evaluate('document.cookie')).toBe('');
  });

  it('creates a task, showing the API refusal beside the field it names', async () => {
    await nav(page, 'Tasks').click();
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByRole('heading', { name: 'New task' }).waitFor();
    await page.getByLabel('Name (optional)').fill('browser-made');
    await page.getByLabel('CPU cores (min)').fill('0');
    await page.getByRole('button', { name: 'Create task' }).click();
    await expect
      .poll(() => page.getByRole('alert').first().textContent())
      .toContain('The task was not created');
    const cores = page.getByLabel('CPU cores (min)');
    expect(await cores.getAttribute('aria-invalid')).toBe('true');
    expect(await page.locator('#task-min_cpu_cores-error').textContent()).toBe(
      'body/requirements/min_cpu_cores must be >= 1',
    );
    // Focus went to the field the API named.
    expect(await page.evaluate('document.activeElement?.id')).toBe('task-min_cpu_cores');
    await screenshot(page, 'task-new-error');

    await cores.fill('1');
    await page.getByRole('button', { name: 'Create task' }).click();
    await page.waitForURL(/\/tasks\/\d+$/);
    await page.getByRole('heading', { name: /browser-made/ }).waitFor();
    const id = Number(page.url().split('/').pop());
    const created = await t.api('GET', `/api/tasks/${id}`);
    expect(created.body).toMatchObject({ name: 'browser-made', status: 'pending', created_by: 'admin' });
  });

  it('pauses and resumes a task, and follows changes made elsewhere live', async () => {
    const id = Number(page.url().split('/').pop());
    const badge = page.locator('.page-head .badge');
    expect(await badge.textContent()).toBe('pending');
    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => badge.textContent()).toBe('paused');
    expect((await t.api('GET', `/api/tasks/${id}`)).body.status).toBe('paused');
    await page.getByRole('button', { name: 'Resume' }).click();
    // Nothing was running it: resume puts it back in the queue.
    await expect.poll(() => badge.textContent()).toBe('pending');
    await expect.poll(() => page.locator('.events li').count()).toBeGreaterThanOrEqual(3);

    // Someone else cancels it through the API: the open page follows without a reload.
    await t.api('PUT', `/api/tasks/${id}/status`, { status: 'cancelled' });
    await expect.poll(() => badge.textContent(), { timeout: 10_000 }).toBe('cancelled');
    await page.getByRole('button', { name: 'Retry' }).waitFor();
    await screenshot(page, 'task');
  });

  it('lists and filters tasks, with a progress bar for each', async () => {
    for (let i = 0; i < 3; i++)
      await t.api('POST', '/api/tasks', { type: 'train_mnist', name: `mnist-${i}`, requirements: {} });
    await nav(page, 'Tasks').click();
    await expect.poll(() => page.locator('tr[data-task-id]').count()).toBe(4);
    expect(await page.getByRole('progressbar').count()).toBe(4);
    await page.getByLabel('Status').selectOption('cancelled');
    await page.waitForURL(/status=cancelled/);
    await expect.poll(() => page.locator('tr[data-task-id]').count()).toBe(1);
    await page.getByRole('button', { name: 'Clear' }).click();
    await expect.poll(() => page.locator('tr[data-task-id]').count()).toBe(4);
    // A task created elsewhere shows up without a reload.
    await t.api('POST', '/api/tasks', { type: 'command', name: 'from-the-api', requirements: {} });
    await expect.poll(() => page.locator('tr[data-task-id]').count(), { timeout: 10_000 }).toBe(5);
    await screenshot(page, 'tasks');
  });

  it('pages back through a long event history, and keeps live events while it does', async () => {
    const created = await t.api('POST', '/api/tasks', { type: 'command', name: 'chatty', requirements: {} });
    const id = created.body.id as number;
    const at = toDbTime(new Date());
    await insertTaskEvents(
      t.server.database.db,
      Array.from({ length: 450 }, (_, i) => ({ task_id: id, at, kind: 'note', message: `note ${i}` })),
    );
    const items = page.locator('.events li');
    await page.goto(`${t.url}/tasks/${id}`);
    // The newest page: 200 of the 451 events (the 450 notes and "created").
    await expect.poll(() => items.count()).toBe(200);
    expect(await items.first().textContent()).toContain('note 449');
    const older = page.getByRole('button', { name: 'Show older events' });
    await older.click();
    await expect.poll(() => items.count()).toBe(400);
    // Something happens while older pages are shown: it appears, and nothing drops out.
    await t.api('PUT', `/api/tasks/${id}/status`, { status: 'paused' });
    await expect.poll(() => items.count(), { timeout: 10_000 }).toBe(401);
    await older.click();
    await expect.poll(() => items.count()).toBe(452);
    await page.getByText('All 452 events shown.').waitFor();
    expect(await items.last().textContent()).toContain('created');
    expect(await older.count()).toBe(0);
  });

  it('cordons and uncordons a client', async () => {
    await nav(page, 'Clients').click();
    const row = page.locator('tr[data-client-id="gpu-box-1"]');
    await row.waitFor();
    expect(await row.locator('.badge').textContent()).toBe('connected');
    await screenshot(page, 'clients');
    await row.getByRole('button', { name: 'Cordon gpu-box-1' }).click();
    await expect.poll(() => row.locator('.badge').textContent()).toBe('cordoned');
    expect((await t.api('GET', '/api/clients/gpu-box-1')).body.cordoned).toBe(true);
    await row.getByRole('button', { name: 'Uncordon gpu-box-1' }).click();
    await expect.poll(() => row.locator('.badge').textContent()).toBe('connected');
    await row.getByRole('link', { name: 'gpu-box-1' }).click();
    await page.getByRole('heading', { name: 'Hardware' }).waitFor();
    expect(await page.locator('.facts').first().textContent()).toContain('RTX 4090');
    await screenshot(page, 'client');
  });

  it('creates a token shown once, and revokes one', async () => {
    const bot = await t.api('POST', '/api/tokens', { name: 'ci-bot', role: 'user' });
    await nav(page, 'Tokens').click();
    await page.getByLabel('Name', { exact: true }).fill('worker-9');
    await page.getByLabel('Role').selectOption('worker');
    await page.getByRole('button', { name: 'Create token' }).click();
    const secret = page.getByTestId('new-token');
    await secret.waitFor();
    expect(await secret.inputValue()).toMatch(/^afm_/);
    await screenshot(page, 'tokens');

    const row = page.locator(`tr[data-token-id="${bot.body.id}"]`);
    await row.getByRole('button', { name: 'Revoke' }).click();
    await row.getByRole('button', { name: 'Yes, revoke' }).click();
    await expect.poll(() => row.count()).toBe(0);
    expect((await t.api('GET', '/api/tasks', undefined, bot.body.token)).status).toBe(401);
  });

  it('adds a user', async () => {
    await nav(page, 'Users').click();
    await page.getByLabel('Username').fill('operator');
    await page.getByLabel('Password', { exact: true }).fill('short');
    await page.getByRole('button', { name: 'Add user' }).click();
    await expect.poll(() => page.locator('#user-password-error').textContent()).toMatch(/body\/password/);
    await page.getByLabel('Password', { exact: true }).fill('operator-password');
    await page.getByRole('button', { name: 'Add user' }).click();
    await page.locator('li[data-user="operator"]').waitFor();
    await screenshot(page, 'users');
  });

  it('shows model versions with their size, digest and tasks, and refuses deleting one in use', async () => {
    const code = 'def create_model():\n    return None\n';
    const pushed = await fetch(`${t.url}/api/models/panel-net/1.0?filename=net.py`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/octet-stream' },
      body: code,
    });
    expect(pushed.status).toBe(201);
    const digest = ((await pushed.json()) as { digest: string }).digest;
    // A task type no connected worker runs: it stays pending, so the version stays in use.
    const task = await t.api('POST', '/api/tasks', {
      type: 'uses-model',
      requirements: {},
      config: { model: 'panel-net@1.0' },
    });
    expect(task.status).toBe(201);
    await nav(page, 'Models').click();
    const row = page.locator('tr[data-model="panel-net@1.0"]');
    await row.waitFor();
    expect(await row.textContent()).toContain(`${code.length} B`);
    expect(await row.locator('td[data-label="Digest"]').getAttribute('title')).toBe(digest);
    expect(await row.getByRole('link', { name: `#${task.body.id}` }).getAttribute('href')).toBe(
      `/tasks/${task.body.id}`,
    );
    await screenshot(page, 'models');
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Yes, delete' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain(`#${task.body.id}`);
    expect(await row.count()).toBe(1);
    await t.api('PUT', `/api/tasks/${task.body.id}/status`, { status: 'cancelled' });
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Yes, delete' }).click();
    await expect.poll(() => row.count()).toBe(0);
  });

  it('refuses a change without the CSRF token (403), a request without a session (401); the keyboard is enough', async () => {
    const noCsrf = await page.evaluate(async () => {
      const r = await fetch('/api/tasks', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'command', requirements: {} }),
      });
      return { status: r.status, body: (await r.json()) as { error: { code: string } } };
    });
    expect(noCsrf.status).toBe(403);
    expect(noCsrf.body.error.code).toBe('csrf_token_invalid');

    const stranger = await browser.newContext();
    try {
      const p = await stranger.newPage();
      await p.goto(t.url + '/');
      const res = await p.evaluate(async () => (await fetch('/api/tasks')).status);
      expect(res).toBe(401);
      await p.getByRole('button', { name: 'Log in' }).waitFor();
      // The keyboard alone gets in: the username has the focus, Tab, Enter.
      await p.keyboard.type('admin');
      await p.keyboard.press('Tab');
      await p.keyboard.type(PASSWORD);
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'Overview' }).waitFor();
      await p.keyboard.press('Tab');
      expect(await p.evaluate('document.activeElement?.textContent')).toBe('Skip to content');
      // Then the brand, Overview, Tasks.
      for (let i = 0; i < 3; i++) await p.keyboard.press('Tab');
      expect(await p.evaluate('document.activeElement?.textContent')).toBe('Tasks');
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'Tasks' }).waitFor();
    } finally {
      await stranger.close();
    }
  });

  it('looks right at 1280 and 390 px wide', async () => {
    await nav(page, 'Overview').click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await screenshot(page, 'overview');
    const phone = await browser.newContext({ viewport: WIDTHS.phone, isMobile: true, hasTouch: true });
    try {
      const p = await phone.newPage();
      await logIn(p, t.url, 'admin', PASSWORD);
      await p.getByRole('heading', { name: 'Overview' }).waitFor();
      for (const [path, name, heading] of [
        ['/', 'overview', 'Overview'],
        ['/tasks', 'tasks', 'Tasks'],
        ['/tasks/1', 'task', 'browser-made'],
        ['/tasks/new', 'task-new', 'New task'],
        ['/clients', 'clients', 'Clients'],
        ['/models', 'models', 'Models'],
        ['/tokens', 'tokens', 'Tokens'],
        ['/users', 'users', 'Users'],
      ] as const) {
        await p.goto(t.url + path);
        await p.getByRole('heading', { name: heading }).first().waitFor();
        await p.waitForLoadState('networkidle').catch(() => {});
        // Nothing may stick out sideways on a phone.
        expect(await p.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
        await screenshot(p, name);
      }
    } finally {
      await phone.close();
    }
  });

  it('logs out', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await page.reload();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    // Only the expected refusals (the 401s, the 403, the 400 and the 409 above) reached the console.
    expect(errors.filter((e) => !/status of (401|403|400|409)/.test(e))).toEqual([]);
  });
});
