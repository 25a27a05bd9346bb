// ESLint flat config. It lives in .ci/ because the repository's top level is fixed;
// `npm run lint` points at it with --config, and basePath puts the repository root back.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const root = new URL('..', import.meta.url).pathname;

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
    files: ['**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
