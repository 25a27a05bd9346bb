import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { PathMatcher } from '../../../agent/files/glob.ts';
import { runCli, lastOfType, type CliResult } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';
import { describeTree } from '../../helpers/tree.ts';

/** Issue 19: absolute paths, brace expansion and escapes in patterns; an --include that matches nothing fails. */

const FILES: Record<string, string> = {
  'logs/a.gz': 'a',
  'logs/b.txt': 'b',
  'logs/c.log': 'c',
  'logs/old/x.gz': 'x',
  'docs/file (1).txt': 'one',
  'docs/star*.txt': 'star',
  'docs/plain.txt': 'plain',
  'docs/!important.md': 'bang',
  'docs/+(odd).md': 'odd',
  'docs/brace{x.md': 'brace',
};

async function restoredFiles(root: string): Promise<string[]> {
  return (await describeTree(root))
    .filter((d) => d.type === 'file')
    .map((d) => d.path)
    .sort();
}

function errorOf(result: CliResult): { code: string; message: string; hint?: string } {
  return lastOfType(result, 'error') as { code: string; message: string; hint?: string };
}

describe('patterns through the CLI (issue 19)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let src: string;
  let full: string;

  before(async () => {
    work = await tempDir('patterns');
    src = join(work.path, 'src');
    for (const [rel, text] of Object.entries(FILES)) {
      await mkdir(join(src, rel, '..'), { recursive: true });
      await writeFile(join(src, rel), text);
    }
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const backup = await runCli(['backup', src, '--tag', 'full'], env);
    assert.equal(backup.code, 0, backup.stderr);
    full = lastOfType(backup, 'summary')?.snapshotId as string;
  });
  after(async () => {
    await work.remove();
  });

  const restore = (target: string, ...includes: string[]): Promise<CliResult> =>
    runCli(['restore', full, '--target', target, ...includes.flatMap((p) => ['--include', p])], env);

  it('backup --exclude expands braces: *.{gz,txt} leaves out both kinds, anywhere', async () => {
    const backup = await runCli(['backup', src, '--exclude', '*.{gz,txt}'], env);
    assert.equal(backup.code, 0, backup.stderr);
    const id = lastOfType(backup, 'summary')?.snapshotId as string;
    const listed = await runCli(['ls', '--recursive', id, '/'], env);
    const files = listed.lines
      .filter((l) => l.type === 'entry' && (l.entry as { type: string }).type === 'file')
      .map((l) => (l.entry as { path: string }).path)
      .sort();
    assert.deepEqual(files, ['docs/!important.md', 'docs/+(odd).md', 'docs/brace{x.md', 'logs/c.log']);
  });

  it('backup --exclude takes an absolute path under the path backed up', async () => {
    const backup = await runCli(['backup', src, '--exclude', join(src, 'logs'), '--exclude', join(src, 'docs', 'plain.txt')], env);
    assert.equal(backup.code, 0, backup.stderr);
    const id = lastOfType(backup, 'summary')?.snapshotId as string;
    const listed = await runCli(['ls', '--recursive', id, '/'], env);
    assert.deepEqual(
      listed.lines
        .filter((l) => l.type === 'entry')
        .map((l) => (l.entry as { path: string }).path)
        .sort(),
      ['docs', 'docs/!important.md', 'docs/+(odd).md', 'docs/brace{x.md', 'docs/file (1).txt', 'docs/star*.txt'],
    );
  });

  it('restore --include takes an absolute path under the path backed up, beside a relative one', async () => {
    const target = join(work.path, 'absolute');
    const r = await restore(target, join(src, 'logs', 'c.log'), 'docs/file (1).txt');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await restoredFiles(target), ['docs/file (1).txt', 'logs/c.log']);

    const whole = join(work.path, 'whole-dir');
    const dir = await restore(whole, `${join(src, 'logs')}/`);
    assert.equal(dir.code, 0, dir.stderr);
    assert.deepEqual(await restoredFiles(whole), ['logs/a.gz', 'logs/b.txt', 'logs/c.log', 'logs/old/x.gz']);

    const root = join(work.path, 'root');
    const all = await restore(root, src);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(await restoredFiles(root), Object.keys(FILES).sort(), 'the path backed up itself is the whole snapshot');
  });

  it('restore --include escapes a glob character and expands braces; other characters are themselves', async () => {
    const escaped = join(work.path, 'escaped');
    const r = await restore(escaped, 'docs/star\\*.txt');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await restoredFiles(escaped), ['docs/star*.txt'], 'the escaped star matches only a star');

    const braces = join(work.path, 'braces');
    const b = await restore(braces, 'logs/{a,c}.*');
    assert.equal(b.code, 0, b.stderr);
    assert.deepEqual(await restoredFiles(braces), ['logs/a.gz', 'logs/c.log']);

    const literal = join(work.path, 'literal');
    const l = await restore(literal, '!important.md', '+(odd).md', 'brace{x.md', 'file (1).txt');
    assert.equal(l.code, 0, l.stderr);
    assert.deepEqual(await restoredFiles(literal), ['docs/!important.md', 'docs/+(odd).md', 'docs/brace{x.md', 'docs/file (1).txt']);
  });

  it('restore --include that matches nothing fails with exit 13 naming the pattern, and writes nothing', async () => {
    const target = join(work.path, 'nothing');
    const r = await restore(target, 'logs/c.log', '*.zip', join(src, 'logs', 'missing.log'));
    assert.equal(r.code, 13, r.stderr);
    const error = errorOf(r);
    assert.equal(error.code, 'Cairn.NotFound');
    assert.match(
      error.message,
      /^--include "\*\.zip", --include ".*\/logs\/missing\.log" match nothing in snapshot [0-9a-f]{8}; nothing was restored$/,
    );
    assert.doesNotMatch(error.message, /c\.log/, 'the pattern that matched is not named');
    assert.match(error.hint ?? '', /cairn ls [0-9a-f]{8} \/ --recursive/);
    assert.ok(error.hint?.includes(`(${src})`), 'the hint names the path the snapshot was taken of');
    await assert.rejects(readdir(target), { code: 'ENOENT' }, 'the target was not even created');

    const empty = join(work.path, 'empty-target');
    await mkdir(empty);
    const one = await restore(empty, 'nope');
    assert.equal(one.code, 13);
    assert.match(errorOf(one).message, /^--include "nope" matches nothing in snapshot/);
    assert.deepEqual(await readdir(empty), [], 'an existing target is left empty');
  });

  it('find takes an absolute pattern and braces; ls and dump take absolute paths, and dump of a missing path fails with 13', async () => {
    const found = await runCli(['find', `${join(src, 'logs')}/*.{log,gz}`, '--snapshot', full], env);
    assert.equal(found.code, 0, found.stderr);
    assert.deepEqual(
      found.lines
        .filter((l) => l.type === 'match')
        .map((l) => (l.entry as { path: string }).path)
        .sort(),
      ['logs/a.gz', 'logs/c.log'],
    );

    const listed = await runCli(['ls', full, join(src, 'logs', 'old')], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      listed.lines.filter((l) => l.type === 'entry').map((l) => (l.entry as { path: string }).path),
      ['logs/old/x.gz'],
    );

    const dumped = await runCli(['dump', full, join(src, 'docs', 'file (1).txt')], env);
    assert.equal(dumped.code, 0, dumped.stderr);
    assert.equal(dumped.stdout, 'one');

    const given = join(src, 'logs', 'gone.log');
    const missing = await runCli(['dump', full, given], env);
    assert.equal(missing.code, 13);
    assert.equal(missing.stdout, '', 'nothing was written');
    assert.ok(missing.stderr.includes(`no logs/gone.log in snapshot ${full.slice(0, 8)} (the path given: ${given})`), missing.stderr);
  });
});

describe('PathMatcher (issue 19: picomatch)', () => {
  it('expands braces, honours escapes and classes, keeps other characters literal', () => {
    const cases: Array<[string, string, boolean]> = [
      ['*.{gz,txt}', 'dir/a.gz', true],
      ['*.{gz,txt}', 'dir/a.txt', true],
      ['*.{gz,txt}', 'dir/a.tgz.log', false],
      ['logs/{a,b/c}.log', 'logs/b/c.log', true],
      ['{1..3}.log', '2.log', true],
      ['{1..3}.log', '4.log', false],
      ['star\\*', 'star*', true],
      ['star\\*', 'starx', false],
      ['back\\\\slash', 'back\\slash', true],
      ['brace\\{', 'brace{', true],
      ['brace{x', 'brace{x', true],
      ['a}b', 'a}b', true],
      ['{x}', '{x}', true],
      ['file (1).txt', 'file (1).txt', true],
      ['file (1).txt', 'file 1.txt', false],
      ['+(a|b)', '+(a|b)', true],
      ['+(a|b)', 'a', false],
      ['!keep', '!keep', true],
      ['!keep', 'other', false],
      ['[!a]x', 'bx', true],
      ['[!a]x', 'ax', false],
      ['[]a]', ']', true],
      ['a[b', 'a[b', true],
      ['.*', '.hidden', true],
      ['*', '.hidden', true],
      ['**/x', 'a/.b/x', true],
      ['data/**', 'data/a\nb/c', true],
      ['x?y', 'x/y', false],
      ['/top', 'deep/top', false],
      ['/top', 'top', true],
    ];
    for (const [pattern, path, expected] of cases) {
      assert.equal(new PathMatcher([pattern]).matches(path), expected, `${JSON.stringify(pattern)} on ${JSON.stringify(path)}`);
    }
  });

  it('takes an absolute pattern relative to the path the snapshot was taken of; several paths by their last names', () => {
    assert.ok(new PathMatcher(['/srv/data/logs/*.log'], ['/srv/data']).matches('logs/a.log'));
    assert.ok(!new PathMatcher(['/srv/data/logs/*.log'], ['/srv/data']).matches('srv/data/logs/a.log'));
    assert.ok(new PathMatcher(['/srv/data'], ['/srv/data']).matches('anything/below'));
    assert.ok(new PathMatcher(['/etc/hosts'], ['/srv/data', '/etc']).matches('etc/hosts'));
    assert.ok(!new PathMatcher(['/etc/hosts'], ['/srv/data', '/etc']).matches('data/etc/hosts'));
    assert.ok(new PathMatcher(['/srv/database'], ['/srv/data']).matches('srv/database'), 'a sibling with a longer name is not under it');
  });

  it('prunes directories a brace pattern cannot reach, and never one it can', () => {
    const m = new PathMatcher(['{logs,tmp}/*.gz', 'a/{b,c/d}/e']);
    assert.equal(m.mayMatchBelow('logs'), true);
    assert.equal(m.mayMatchBelow('tmp'), true);
    assert.equal(m.mayMatchBelow('docs'), false);
    assert.equal(m.mayMatchBelow('a'), true);
    assert.equal(m.mayMatchBelow('a/c'), true, 'a brace group across a slash reaches anything below');
    assert.equal(m.mayMatchBelow('a/c/d'), true);
  });

  it('a name with its glob characters escaped matches itself, and only names equal to it (property)', () => {
    const escape = (name: string): string => name.replace(/[\\*?[\]{}]/g, '\\$&');
    const nameChar = fc.constantFrom(...'ab.-_ ()+@!|^$,{}[]*?\\#~\n'.split(''));
    const name = fc
      .array(nameChar, { minLength: 1, maxLength: 12 })
      .map((cs) => cs.join(''))
      .filter((n) => n !== '.' && n !== '..');
    fc.assert(
      fc.property(name, name, (a, b) => {
        const m = new PathMatcher([escape(a)]);
        return m.matches(a) && m.matches(`dir/${a}`) && m.matches(b) === (a === b);
      }),
      { numRuns: 2000 },
    );
  });
});
