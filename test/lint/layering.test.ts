import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ESLint, type Linter } from 'eslint';
import { layers } from '../../.ci/eslint.config.js';

/**
 * The layering rule (docs/architecture.md, "Layers") run through ESLint's API with the
 * repository's own config, on fixtures given a virtual path inside the layer under test.
 * The fixtures end in .ts.txt so neither `npm run lint` nor `npm run typecheck` reads them;
 * type information is off here because cairn/layering needs none (and it keeps this fast).
 */
const root = new URL('../../', import.meta.url).pathname;
const eslint = new ESLint({
  cwd: root,
  overrideConfigFile: `${root}.ci/eslint.config.js`,
  overrideConfig: { files: ['**/*.ts'], languageOptions: { parserOptions: { projectService: false } } },
  ruleFilter: ({ ruleId }) => ruleId === 'cairn/layering',
});

async function lint(fixture: string | { text: string }, filePath: string): Promise<Linter.LintMessage[]> {
  const text = typeof fixture === 'string' ? await readFile(new URL(`fixtures/${fixture}`, import.meta.url), 'utf8') : fixture.text;
  const [result] = await eslint.lintText(text, { filePath: `${root}${filePath}` });
  assert.ok(result);
  const fatal = result.messages.filter((m) => m.fatal);
  assert.deepEqual(fatal, [], 'the fixture parses');
  return result.messages;
}

/** The reported lines and messages, so a test names exactly what is reported and what is not. */
const reported = (messages: Linter.LintMessage[]) => messages.map((m) => ({ line: m.line, rule: m.ruleId, message: m.message }));

describe('cairn/layering', () => {
  it('reports agent/core importing agent/storage, and only that', async () => {
    const messages = await lint('core-imports-storage.ts.txt', 'agent/core/lint-fixture.ts');
    assert.deepEqual(reported(messages), [
      {
        line: 2,
        rule: 'cairn/layering',
        message: 'core may not import storage (../storage/file.ts): core imports only core (docs/architecture.md, "Layers")',
      },
    ]);
  });

  it('reports a function importing an engine, the CLI or a command, and allows core, storage and the plan reader', async () => {
    const messages = await lint('functions-import-engine.ts.txt', 'functions/lint-fixture.ts');
    assert.deepEqual(
      messages.map((m) => [m.line, m.ruleId]),
      [
        [2, 'cairn/layering'],
        [3, 'cairn/layering'],
        [4, 'cairn/layering'],
      ],
    );
    assert.match(messages[0]?.message ?? '', /^functions may not import engines \(\.\.\/agent\/engines\/registry\.ts\)/);
    assert.match(messages[1]?.message ?? '', /^functions may not import cli /);
    assert.match(messages[2]?.message ?? '', /^functions may not import commands /);
  });

  it('treats a subfolder of core as core: reports an SDK package and a type-only import of storage, allows zod and node builtins', async () => {
    const messages = await lint('core-imports-package.ts.txt', 'agent/core/engine-options/lint-fixture.ts');
    assert.deepEqual(
      messages.map((m) => [m.line, m.message]),
      [
        [2, 'core may not import the package @aws-sdk/client-s3: core imports only zod and node: builtins (docs/architecture.md)'],
        [8, 'core may not import storage (../../storage/s3.ts): core imports only core (docs/architecture.md, "Layers")'],
      ],
    );
  });

  it('allows the same storage import in a command', async () => {
    const messages = await lint(
      { text: "import { FileStorage } from '../storage/file.ts';\nexport const x = FileStorage;\n" },
      'agent/commands/x.ts',
    );
    assert.deepEqual(reported(messages), []);
  });

  it('reports agent/cli imported from anywhere but the CLI (and tests)', async () => {
    const text = "import { main } from '../cli/main.ts';\nexport const x = main;\n";
    assert.equal((await lint({ text }, 'agent/commands/x.ts')).length, 1);
    assert.equal((await lint({ text }, 'agent/cli/commands/x.ts')).length, 0, 'a file in a subfolder of the CLI is the CLI');
    assert.equal(
      (await lint({ text: "import { main } from '../../agent/cli/main.ts';\nexport const x = main;\n" }, 'test/x/y.ts')).length,
      0,
    );
  });

  it('reports cdk importing anything of agent/ but core', async () => {
    const text =
      "import { engines } from '../../agent/engines/registry.ts';\nimport { z } from '../../agent/core/plan.ts';\nexport const x = [engines, z];\n";
    assert.deepEqual(
      (await lint({ text }, 'cdk/lib/x.ts')).map((m) => m.line),
      [1],
    );
  });

  it('excuses an exception by its exact edge, and reports an exception whose import is gone', async () => {
    const excusing = new ESLint({
      cwd: root,
      overrideConfigFile: `${root}.ci/eslint.config.js`,
      overrideConfig: [
        { files: ['**/*.ts'], languageOptions: { parserOptions: { projectService: false } } },
        {
          rules: {
            'cairn/layering': [
              'error',
              {
                layers,
                placed: ['agent'],
                exceptions: [
                  { from: 'agent/core/x.ts', to: 'agent/storage/file.ts', todo: 'test' },
                  { from: 'agent/core/x.ts', to: 'agent/storage/s3.ts', todo: 'test' },
                ],
              },
            ],
          },
        },
      ],
      ruleFilter: ({ ruleId }) => ruleId === 'cairn/layering',
    });
    const text =
      "import { FileStorage } from '../storage/file.ts';\nimport { GcsStorage } from '../storage/gcs.ts';\nexport const x = [FileStorage, GcsStorage];\n";
    const [result] = await excusing.lintText(text, { filePath: `${root}agent/core/x.ts` });
    assert.deepEqual(
      result?.messages.map((m) => [m.line, m.message]),
      [
        [
          1,
          'the layering exception agent/core/x.ts → agent/storage/s3.ts excuses an import this file no longer has: remove it from .ci/eslint.config.js',
        ],
        [2, 'core may not import storage (../storage/gcs.ts): core imports only core (docs/architecture.md, "Layers")'],
      ],
    );
  });

  it('reports a file in a folder of agent/ that the table does not place', async () => {
    const messages = await lint({ text: 'export const x = 1;\n' }, 'agent/newfolder/x.ts');
    assert.equal(messages.length, 1);
    assert.match(messages[0]?.message ?? '', /agent\/newfolder\/x\.ts is in no layer/);
  });
});
