import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMAND_NAMES } from '../../../agent/cli/command-table.ts';
import { allNodes } from '../../../agent/cli/command-tree.ts';
import { runCliText } from '../../helpers/cli.ts';
import { loadedCommandTree } from '../../helpers/command-tree.ts';

/** Whether a shell is installed; a test that needs one it lacks says how to get it. */
function has(program: string): boolean {
  return spawnSync(program, ['--version'], { stdio: 'ignore' }).status === 0;
}

async function script(shell: string, dir: string): Promise<string> {
  const run = await runCliText(['completion', shell], {});
  assert.equal(run.code, 0, run.stderr);
  const file = join(dir, `cairn.${shell}`);
  await writeFile(file, run.stdout);
  return file;
}

/**
 * What bash completes for these words (the last one is the word under the cursor): the script
 * sourced in a real bash, its function called as `complete -F` calls it, COMPREPLY printed.
 */
function bashComplete(file: string, cwd: string, words: string[]): string[] {
  const driver = 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _cairn; printf "%s\\n" "${COMPREPLY[@]}"';
  const run = spawnSync('bash', ['--norc', '--noprofile', '-c', driver, 'bash', file, ...words], { cwd, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stderr, '', `bash printed errors for ${words.join(' ')}`);
  return run.stdout.split('\n').filter(Boolean).sort();
}

describe('cairn completion bash', () => {
  it('completes `cairn res` to restore, `backup --exc` to its three exclude options and `key l` to list', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-completion-'));
    try {
      const file = await script('bash', dir);
      assert.deepEqual(bashComplete(file, dir, ['cairn', 'res']), ['restore']);
      assert.deepEqual(bashComplete(file, dir, ['cairn', 'backup', '--exc']), ['--exclude', '--exclude-file', '--exclude-if-present']);
      assert.deepEqual(bashComplete(file, dir, ['cairn', 'key', 'l']), ['list']);
      assert.deepEqual(bashComplete(file, dir, ['cairn', 'repair', 'i']), ['index']);
      // A global option's value is skipped, in both spellings (bash splits --repo=X into --repo, =, X).
      assert.deepEqual(bashComplete(file, dir, ['cairn', '--repo', 'key', 'pitr', 's']), ['status']);
      assert.deepEqual(bashComplete(file, dir, ['cairn', '--repo', '=', 'key', 'pitr', 's']), ['status']);
      // The program's options are accepted after a subcommand, as commander takes them.
      assert.deepEqual(bashComplete(file, dir, ['cairn', 'pitr', 'status', '--js']), ['--json']);
      assert.deepEqual(bashComplete(file, dir, ['cairn', 'completion', '']), ['bash', 'fish', 'zsh']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('completes local paths where an argument or option is one, and nothing inside a snapshot', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-completion-'));
    try {
      const file = await script('bash', dir);
      const cwd = join(dir, 'cwd');
      await mkdir(join(cwd, 'alpha-dir'), { recursive: true });
      await writeFile(join(cwd, 'alpha.txt'), 'a');
      assert.deepEqual(bashComplete(file, cwd, ['cairn', 'backup', 'al']), ['alpha-dir', 'alpha.txt']);
      assert.deepEqual(bashComplete(file, cwd, ['cairn', 'backup', '--exclude-file', 'al']), ['alpha-dir', 'alpha.txt']);
      assert.deepEqual(bashComplete(file, cwd, ['cairn', 'restore', 'latest', '--target', 'al']), ['alpha-dir'], 'a directory only');
      assert.deepEqual(bashComplete(file, cwd, ['cairn', 'dump', 'latest', 'al']), [], "dump's file is inside the snapshot");
      assert.deepEqual(bashComplete(file, cwd, ['cairn', 'backup', '--exclude', 'al']), [], 'a pattern is no local path');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is generated from the registered commands: every command with subcommands completes exactly those', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-completion-'));
    try {
      const file = await script('bash', dir);
      const root = await loadedCommandTree();
      // `cairn completion` loads every command, not only its own module.
      assert.deepEqual(
        root.subcommands.map((s) => s.path[0]),
        COMMAND_NAMES.flat(),
      );
      for (const node of allNodes(root).filter((n) => n.subcommands.length > 0)) {
        const expected = node.subcommands.map((s) => s.path.at(-1) ?? '').sort();
        assert.deepEqual(bashComplete(file, dir, ['cairn', ...node.path, '']), expected, `cairn ${node.path.join(' ')}`);
      }
      for (const node of allNodes(root)) {
        const completed = bashComplete(file, dir, ['cairn', ...node.path, '-']);
        for (const option of node.options)
          if (option.long) assert.ok(completed.includes(option.long), `${option.long} of ${node.path.join(' ')}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cairn completion zsh and fish', () => {
  it('zsh: the script parses (zsh -n) and, loaded after compinit, completes cairn with _cairn', async (t) => {
    if (!has('zsh')) return t.skip('zsh is not installed (apt-get install zsh)');
    const dir = await mkdtemp(join(tmpdir(), 'cairn-completion-'));
    try {
      const file = await script('zsh', dir);
      const syntax = spawnSync('zsh', ['-n', file], { encoding: 'utf8' });
      assert.equal(syntax.status, 0, syntax.stderr);
      const load = 'autoload -U compinit && compinit -u -D && source "$1" && print -r -- "$_comps[cairn]" && whence -w _cairn_key_list';
      const loaded = spawnSync('zsh', ['-f', '-c', load, 'zsh', file], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: dir } });
      assert.equal(loaded.status, 0, loaded.stderr);
      assert.equal(loaded.stderr, '');
      assert.equal(loaded.stdout, '_cairn\n_cairn_key_list: function\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fish: the script parses (fish --no-execute) and completes `cairn res`, `cairn key l` and `backup --exc`', async (t) => {
    if (!has('fish')) return t.skip('fish is not installed (apt-get install fish)');
    const dir = await mkdtemp(join(tmpdir(), 'cairn-completion-'));
    try {
      const file = await script('fish', dir);
      const syntax = spawnSync('fish', ['--no-execute', file], { encoding: 'utf8' });
      assert.equal(syntax.status, 0, syntax.stderr);
      const complete = (line: string): string[] => {
        const run = spawnSync('fish', ['--no-config', '-c', 'source $argv[1]; complete -C $argv[2]', file, line], {
          encoding: 'utf8',
          env: { PATH: process.env.PATH, HOME: dir },
        });
        assert.equal(run.status, 0, run.stderr);
        return run.stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split('\t')[0] ?? '')
          .sort();
      };
      assert.deepEqual(complete('cairn res'), ['restore']);
      assert.deepEqual(complete('cairn key l'), ['list']);
      assert.deepEqual(complete('cairn --repo /x key l'), ['list']);
      assert.deepEqual(complete('cairn backup --exc'), ['--exclude', '--exclude-file', '--exclude-if-present']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
