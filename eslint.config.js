import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Module boundaries (docs/architecture.md "Layout"): the server and the worker share code only
// through the neutral modules (api/, mnist/, threads.ts, code/archive-guard.ts).
const WORKER = {
  group: ['**/worker/*', '**/worker/**'],
  message: 'The server does not import worker code; share it through src/api/ or src/mnist/.',
};
const SERVER = {
  group: [
    'storage',
    'tasks',
    'clients',
    'scheduling',
    'training/coordinator',
    'http',
    'ws',
    'auth',
    'cluster',
    'bus',
    'cache',
    'panel',
    'cli',
  ]
    .map((dir) => `**/${dir}/**`)
    .concat(['**/main.js', '**/farm.js']),
  message:
    'The worker and the shared modules do not import the server; share it through src/api/ or src/mnist/.',
};
const restrict = (...patterns) => ({ 'no-restricted-imports': ['error', { patterns }] });

export default tseslint.config(
  { ignores: ['dist/**', 'web/dist/**', 'node_modules/**', 'data/**', 'coverage/**', 'test-artifacts/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        URL: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: [
      'src/worker/**',
      'src/api/**',
      'src/mnist/**',
      'src/index.ts',
      'src/cli/worker-command.ts',
      'src/**/*.test.ts',
    ],
    rules: restrict(WORKER),
  },
  { files: ['src/worker/**/*.ts'], ignores: ['src/**/*.test.ts'], rules: restrict(SERVER) },
  {
    files: ['src/api/**/*.ts', 'src/mnist/**/*.ts'],
    ignores: ['src/**/*.test.ts'],
    rules: restrict(WORKER, SERVER),
  },
);
