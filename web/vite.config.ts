import { fileURLToPath } from 'node:url';
import preact from '@preact/preset-vite';
import { defineConfig } from 'vite';

/**
 * The admin panel. `npm run build:web` writes web/dist, which the server serves at /.
 * `npx vite --config web/vite.config.ts` serves it with live reload, proxying the API to
 * a server on :8000.
 */
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  plugins: [preact({ prerender: { enabled: false } })],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The server's CSP allows no inline script; keep every asset a file.
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    proxy: { '/api': 'http://127.0.0.1:8000' },
  },
});
