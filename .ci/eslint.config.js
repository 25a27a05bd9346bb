// ESLint flat config. It lives in .ci/ because the repository's top level is fixed;
// `npm run lint` points at it with --config, and basePath puts the repository root back.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { basePath: '..', ignores: ['node_modules/**', 'cdk.out/**', '**/*.d.ts'] },
  {
    basePath: '..',
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.strictTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: new URL('..', import.meta.url).pathname },
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
    basePath: '..',
    files: ['**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
