import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
/** Screenshots of the panel, kept by CI as artifacts (gitignored). */
export const ARTIFACTS = join(ROOT, 'test-artifacts', 'panel');
export const CHROMIUM = process.env.AI_FARM_CHROMIUM ?? '/usr/bin/chromium';
export const WIDTHS = { desktop: { width: 1280, height: 860 }, phone: { width: 390, height: 844 } } as const;

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/**
 * Builds web/dist when a panel source is newer than it (npm install builds it too). Test
 * files run in parallel: a lock directory keeps two of them from building at once.
 */
export function ensurePanelBuilt(): void {
  const index = join(ROOT, 'web/dist/index.html');
  const sources = Math.max(newest(join(ROOT, 'web/src')), statSync(join(ROOT, 'web/index.html')).mtimeMs);
  const fresh = () => existsSync(index) && statSync(index).mtimeMs >= sources;
  if (fresh()) return;
  // Outside the tree, so linters walking it never meet a half-made lock.
  const lock = join(
    tmpdir(),
    `aifarm-panel-build-${createHash('sha1').update(ROOT).digest('hex').slice(0, 10)}.lock`,
  );
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // A stale lock (a killed run) is older than any build takes.
      if (existsSync(lock) && Date.now() - statSync(lock).mtimeMs > 120_000)
        rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error('timed out waiting for another panel build');
      execFileSync('sleep', ['0.5']);
    }
  }
  try {
    if (!fresh()) {
      execFileSync(
        process.execPath,
        [join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', '--config', 'web/vite.config.ts'],
        {
          cwd: ROOT,
          stdio: 'pipe',
        },
      );
    }
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** Debian's chromium, headless, with nothing that reaches the network by itself. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: run scripts/ensure-services.sh (apt-get install chromium)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** A browser for the calling suite: the panel built and chromium started before its tests, closed after them. */
export function browserForSuite(): () => Browser {
  let browser: Browser | undefined;
  beforeAll(async () => {
    ensurePanelBuilt();
    browser = await launchBrowser();
  });
  afterAll(async () => browser?.close());
  return () => browser!;
}

/** Saves a full-page screenshot as test-artifacts/panel/<name>-<width>.png. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const width = page.viewportSize()?.width ?? 0;
  const path = join(ARTIFACTS, `${name}-${width}.png`);
  // A full-page shot of a scrolled page would paint the sticky header mid-page.
  await page.evaluate('window.scrollTo(0, 0)');
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Logs in through the login form. */
export async function logIn(page: Page, base: string, username: string, password: string): Promise<void> {
  await page.goto(base + '/');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}

/** Collects the page's console errors and failed requests, which a test can assert are none. */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
  return errors;
}
