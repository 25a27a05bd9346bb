// ESLint flat config. It lives in .ci/ because the repository's top level is fixed;
// `npm run lint` points at it with --config, and basePath puts the repository root back.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import cairn from './layering.js';

const root = new URL('..', import.meta.url).pathname;

// Who may import whom: docs/architecture.md ("Layers") says why, cairn/layering (layering.js) enforces
// it. A layer always imports itself; `packages`, when given, is the only npm packages it may use.
// test/ is in no layer: tests may import anything.
const all = ['core', 'storage', 'pipeline', 'engines', 'pitr', 'files', 'keys', 'orchestration', 'progress', 'process'];
export const layers = [
  { name: 'core', folder: 'agent/core', may: [], packages: ['zod'] },
  { name: 'progress', folder: 'agent/progress', may: ['core'] },
  { name: 'process', folder: 'agent/process', may: ['core'] },
  { name: 'storage', folder: 'agent/storage', may: ['core'] },
  { name: 'keys', folder: 'agent/keys', may: ['core'] },
  { name: 'orchestration', folder: 'agent/orchestration', may: ['core', 'keys'] },
  { name: 'pipeline', folder: 'agent/pipeline', may: ['core', 'progress'] },
  { name: 'files', folder: 'agent/files', may: ['core', 'pipeline', 'progress', 'process'] },
  { name: 'engines', folder: 'agent/engines', may: ['core', 'pipeline', 'progress', 'process'] },
  { name: 'pitr', folder: 'agent/pitr', may: ['core', 'progress', 'process'] },
  { name: 'commands', folder: 'agent/commands', may: all },
  { name: 'cli', folder: 'agent/cli', may: [...all, 'commands'] },
  { name: 'functions', folder: 'functions', may: ['core', 'storage', 'orchestration', 'keys'] },
  { name: 'cdk', folder: 'cdk', may: ['core'] },
];

// Imports that break a rule today while a move is under way: single file → file edges, each naming
// its fix. An entry whose import is gone is reported, so the list cannot go stale; it is meant to be empty.
export const layeringExceptions = [];

export default tseslint.config(
  { basePath: root, ignores: ['node_modules/**', 'cdk.out/**', '**/*.d.ts'] },
  {
    basePath: root,
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.strictTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: root },
    },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unnecessary-condition': 'off',
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // node:test's describe/it return promises the runner itself awaits.
    basePath: root,
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' },
  },
  {
    basePath: root,
    files: ['**/*.ts', '**/*.js'],
    plugins: { cairn },
    rules: { 'cairn/layering': ['error', { layers, placed: ['agent', 'functions', 'cdk'], exceptions: layeringExceptions }] },
  },
  {
    basePath: root,
    files: ['**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
