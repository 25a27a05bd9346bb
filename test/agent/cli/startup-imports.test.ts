import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BUILT_DIR, BUILT_ENTRY, BUILT_SOURCES, builtCli } from '../../../agent/cli/built-cli.js';
import { VERSION } from '../../../agent/core/version.ts';
import { Cli } from '../../../agent/cli/context.ts';
import { COMMAND_NAMES, commandInArgv } from '../../../agent/cli/command-table.ts';
import { createProgram } from '../../../agent/cli/program.ts';
import { CAIRN_BIN, runCli } from '../../helpers/cli.ts';

/**
 * Start-up cost (issue 21): a command that needs no cloud must not load a cloud SDK. The
 * child runs under a module hook (module.registerHooks, in-thread) that writes every
 * resolved URL to a file as the process exits; the test then looks for the SDK packages.
 */
const HOOK = `
import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
const out = process.env.CAIRN_TEST_MODULE_LOG;
const seen = [];
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    seen.push(r.url);
    return r;
  },
});
process.on('exit', () => appendFileSync(out, seen.join('\\n') + '\\n'));
`;

async function loadedModules(
  dir: string,
  args: string[],
  env: Record<string, string>,
  script = CAIRN_BIN,
): Promise<{ code: number | null; urls: string[]; stdout: string; stderr: string }> {
  const hook = join(dir, 'hook.mjs');
  const log = join(dir, `modules-${args.join('-').replace(/[^a-z-]/g, '')}.log`);
  await writeFile(hook, HOOK);
  await writeFile(log, '');
  const child = spawn(process.execPath, ['--import', hook, script, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: dir, CAIRN_TEST_MODULE_LOG: log, CAIRN_JSON: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const urls = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
  return { code, urls, stdout, stderr };
}

const CLOUD = /node_modules\/(@aws-sdk|@smithy|@google-cloud|google-auth-library|gaxios)\//;
/** What `--version` has no use for (context.ts and command-table.ts load them on demand). */
const LIBRARY = /\/agent\/(core\/repository|storage\/open|engines\/registry|cli\/open-repository|cli\/passphrase)\.ts$|node_modules\/zod\//;
/** A command's module under agent/cli/commands/ (main.ts imports each only when its command runs). */
const COMMAND_MODULE = /\/agent\/cli\/commands\//;

describe('start-up loads no cloud SDK for local commands', () => {
  it('--version and snapshots on a file repository load no @aws-sdk/, @smithy/ or @google-cloud/ module', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-startup-'));
    try {
      const repo = join(dir, 'repo');
      const env = { CAIRN_PASSWORD: 'correct horse battery staple', CAIRN_REPOSITORY: repo };
      const version = await loadedModules(dir, ['--version'], env);
      assert.equal(version.code, 0, version.stderr);
      // The hook saw the CLI's own modules: an empty log would make the next assertion vacuous.
      assert.ok(
        version.urls.some((u) => u.endsWith('/agent/cli/main.ts')),
        'the hook recorded the CLI modules',
      );
      assert.deepEqual(
        version.urls.filter((u) => CLOUD.test(u)),
        [],
      );
      assert.deepEqual(
        version.urls.filter((u) => COMMAND_MODULE.test(u)),
        [],
        '--version loads no command module',
      );
      // Nor the library the commands use: the repository, the storage backends, the engines and zod.
      assert.deepEqual(
        version.urls.filter((u) => LIBRARY.test(u)),
        [],
        '--version loads no repository, storage, engine or zod module',
      );

      const init = await loadedModules(dir, ['init'], env);
      assert.equal(init.code, 0, init.stderr);
      assert.deepEqual(
        init.urls.filter((u) => CLOUD.test(u)),
        [],
        'init on a file repository',
      );

      // Global options before the command: main.ts skips them (and --concurrency's value) to find it.
      const snapshots = await loadedModules(dir, ['--concurrency', '2', 'snapshots'], env);
      assert.equal(snapshots.code, 0, snapshots.stderr);
      assert.ok(
        snapshots.urls.some((u) => u.endsWith('/agent/core/repository.ts')),
        'snapshots opened the repository',
      );
      assert.deepEqual(
        snapshots.urls.filter((u) => CLOUD.test(u)),
        [],
        'snapshots on a file repository',
      );
      assert.deepEqual(
        [...new Set(snapshots.urls.filter((u) => COMMAND_MODULE.test(u)).map((u) => u.replace(/^.*\/agent\/cli\/commands\//, '')))],
        ['snapshots.ts'],
        'snapshots loads its own command module only',
      );
      assert.deepEqual(
        snapshots.urls.filter((u) => u.endsWith('/agent/engines/registry.ts')),
        [],
        'snapshots loads no engine (only backup and restore take their flags)',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('main.ts loads the command a run names', () => {
  it("COMMAND_NAMES lists what each command's module registers, in --help's order", async () => {
    const help = await runCli(['--help'], {});
    assert.equal(help.code, 0, help.stderr);
    // The list ends at the first blank line, where the program's examples begin.
    const commands = help.stdout.split('\nCommands:\n')[1]!.split('\n\n')[0]!;
    const listed = [...commands.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]).filter((n) => n !== 'help');
    assert.deepEqual(listed, COMMAND_NAMES.flat());
  });

  it('finds the command after global options, and loads every command when it cannot tell', () => {
    const program = createProgram(new Cli({}));
    const cases: [string[], string | undefined][] = [
      [['snapshots'], 'snapshots'],
      [['--json', '--concurrency', '3', '--repo=/x', 'unpin', 'abc'], 'unpin'],
      [['-r', '/x', '-q', 'backup', '--engine', 'etcd'], 'backup'],
      [['--password-file', 'init', 'snapshots'], 'snapshots'], // the file's name is not the command
      [['--version'], 'version'],
      [['-q', '-V', 'snapshots'], 'version'],
      [['--help'], undefined],
      [['help', 'snapshots'], 'help'],
      [['--bogus', 'snapshots'], undefined], // commander would treat what follows as unknown
      [['-qr/x', 'snapshots'], undefined],
      [[], undefined],
    ];
    for (const [args, expected] of cases) assert.equal(commandInArgv(program, args), expected, args.join(' '));
  });

  it('every command, loaded alone, is the one run (its help)', async () => {
    for (const name of COMMAND_NAMES.flat()) {
      const alone = await runCli(['--json', '--concurrency', '3', '--repo=/nonexistent', name, '--help'], {});
      assert.equal(alone.code, 0, `${name}: ${alone.stderr}`);
      assert.match(alone.stdout, new RegExp(`^Usage: cairn ${name} `), name);
    }
  });

  it('an unknown command is still refused with the list of commands in reach (every module loaded)', async () => {
    const typo = await runCli(['snapshot'], {});
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /unknown command 'snapshot'[\s\S]*snapshots/);
  });
});

describe('the built CLI (npm run build:cli) and the bin that picks it', () => {
  it('builds one module that runs --version and snapshots of a repository the sources made, loading no other file of the checkout', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-built-'));
    try {
      const outdir = join(dir, 'built');
      const build = spawnSync(
        process.execPath,
        [fileURLToPath(new URL('../../../agent/cli/build.ts', import.meta.url)), '--outdir', outdir],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(build.status, 0, build.stderr);
      const bundle = join(outdir, BUILT_ENTRY);
      const sources = JSON.parse(await readFile(join(outdir, BUILT_SOURCES), 'utf8')) as { files: [string, number, number][] };
      assert.ok(
        sources.files.some(([path]) => path === 'agent/cli/main.ts'),
        'sources.json lists what the bundle was built from',
      );
      assert.ok(
        sources.files.every(
          ([path]) => !path.startsWith('..') && (!path.includes('node_modules/') || path === 'node_modules/.package-lock.json'),
        ),
        'only files of the repository, and the lock files for the dependencies',
      );

      const repo = join(dir, 'repo');
      const env = { CAIRN_PASSWORD: 'correct horse battery staple', CAIRN_REPOSITORY: repo };
      const init = await loadedModules(dir, ['init'], env); // the sources make the repository
      assert.equal(init.code, 0, init.stderr);

      const version = await loadedModules(dir, ['--version'], env, bundle);
      assert.equal(version.code, 0, version.stderr);
      assert.equal(version.stdout, `${VERSION}\n`);
      const files = (urls: string[]): string[] => [...new Set(urls.filter((u) => u.startsWith('file:') && !u.endsWith('/hook.mjs')))];
      assert.deepEqual(files(version.urls), [pathToFileURL(bundle).href], 'no TypeScript source or dependency besides the bundle');

      const snapshots = await loadedModules(dir, ['snapshots'], env, bundle);
      assert.equal(snapshots.code, 0, snapshots.stderr);
      assert.deepEqual(
        snapshots.stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as { snapshots?: unknown }).snapshots),
        [[]],
      );
      assert.deepEqual(files(snapshots.urls), [pathToFileURL(bundle).href]);
      assert.deepEqual(
        snapshots.urls.filter((u) => CLOUD.test(u)),
        [],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the bin runs the build only while every file it was built from is unchanged', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-built-'));
    try {
      const root = pathToFileURL(`${dir}/`);
      assert.deepEqual(builtCli(root), { entry: undefined, stale: undefined }, 'never built');
      await mkdir(join(dir, 'src'));
      await writeFile(join(dir, 'src', 'a.ts'), 'one');
      const { size, mtimeMs } = statSync(join(dir, 'src', 'a.ts'));
      await mkdir(join(dir, BUILT_DIR), { recursive: true });
      await writeFile(join(dir, BUILT_DIR, BUILT_SOURCES), JSON.stringify({ files: [['src/a.ts', size, mtimeMs]] }));
      assert.equal(builtCli(root).entry?.href, new URL(`${BUILT_DIR}${BUILT_ENTRY}`, root).href);
      await writeFile(join(dir, 'src', 'a.ts'), 'two!');
      assert.deepEqual(builtCli(root), { entry: undefined, stale: 'src/a.ts changed' });
      await rm(join(dir, 'src', 'a.ts'));
      assert.deepEqual(builtCli(root), { entry: undefined, stale: 'src/a.ts is gone' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the package bin runs (the build when current, else the sources)', () => {
    const bin = fileURLToPath(new URL('../../../agent/cli/bin.js', import.meta.url));
    const run = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, `${VERSION}\n`);
  });
});
