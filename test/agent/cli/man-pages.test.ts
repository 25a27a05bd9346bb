import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allNodes } from '../../../agent/cli/command-tree.ts';
import { HELP_EXAMPLES } from '../../../agent/cli/help-examples.ts';
import { manPageName } from '../../../agent/cli/man-page.ts';
import { runCliText } from '../../helpers/cli.ts';
import { loadedCommandTree } from '../../helpers/command-tree.ts';

const GROFF = spawnSync('groff', ['--version'], { stdio: 'ignore' }).status === 0;

/** The text of one section of a rendered page (man pages indent everything but the headings). */
function section(rendered: string, heading: string): string {
  const start = rendered.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `no ${heading} section`);
  const rest = rendered.slice(start + heading.length + 2);
  return rest.slice(0, rest.search(/\n[A-Z][A-Z ]+\n/) + 1 || undefined);
}

describe('cairn generate --man DIR', () => {
  it('writes one page per registered command, each rendered by groff without a warning, with every section', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-man-'));
    try {
      const out = join(dir, 'man', 'man1'); // created, parents too
      const run = await runCliText(['generate', '--man', out], {});
      assert.equal(run.code, 0, run.stderr);
      const root = await loadedCommandTree();
      const expected = allNodes(root).map(manPageName);
      assert.deepEqual((await readdir(out)).sort(), [...expected].sort(), 'a page for each command and nothing else');
      assert.equal(
        run.stdout,
        `wrote ${expected.length} man pages to ${out} (man ${join(out, 'cairn.1')}, or add its parent to MANPATH)\n`,
      );
      assert.ok(expected.includes('cairn-key-list.1') && expected.includes('cairn-backup.1') && expected.includes('cairn.1'));

      if (!GROFF) return t.skip('groff is not installed (apt-get install groff-base): the pages were written but not rendered');
      const docs = await readFile(new URL('../../../docs/exit-codes.md', import.meta.url), 'utf8');
      const statuses = [...docs.matchAll(/^\| (\d+) \|/gm)].map((m) => m[1] as string);
      for (const node of allNodes(root)) {
        const file = join(out, manPageName(node));
        const check = spawnSync('groff', ['-ww', '-z', '-man', file], { encoding: 'utf8' });
        assert.equal(check.status, 0, check.stderr);
        assert.equal(check.stderr, '', `groff warns about ${file}`);
        const rendered = spawnSync('groff', ['-man', '-Tascii', '-P-cbou', file], { encoding: 'utf8' }).stdout;
        const name = ['cairn', ...node.path].join(' ');
        assert.match(section(rendered, 'NAME'), new RegExp(`^\\s+${name.replace(/ /g, '-')}\\s+-\\s+\\S`), file);
        assert.match(section(rendered, 'SYNOPSIS'), new RegExp(`${name.replace(/ /g, '\\s+')}\\s+\\[options\\]`), file);
        assert.ok(section(rendered, 'DESCRIPTION').trim().length > 0, file);
        const options = section(rendered, 'OPTIONS');
        for (const option of node.options) assert.ok(options.includes(option.long ?? option.short ?? ''), `${option.flags} in ${file}`);
        const examples = section(rendered, 'EXAMPLES').replace(/\s+/g, ' ');
        for (const [, line] of HELP_EXAMPLES[node.path.join(' ')] ?? []) assert.ok(examples.includes(line), `${line} in ${file}`);
        const exit = section(rendered, 'EXIT STATUS');
        for (const status of statuses) assert.match(exit, new RegExp(`^ +${status} +\\S`, 'm'), `exit ${status} in ${file}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a directory it cannot create is a usage error naming it, and writes nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-man-'));
    try {
      await writeFile(join(dir, 'file'), 'not a directory');
      const run = await runCliText(['generate', '--man', join(dir, 'file', 'man1')], {});
      assert.equal(run.code, 2);
      assert.match(run.stderr, /cannot create the man page directory .*file\/man1/);
      assert.match(run.stderr, /hint: give --man a directory you can write to/);
      assert.deepEqual(await readdir(dir), ['file']);
      const missing = await runCliText(['generate'], {});
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /--man <dir>' not specified/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
