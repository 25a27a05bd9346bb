import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CairnError, errorMessage } from '../../core/errors.ts';
import { VERSION } from '../../core/version.ts';
import { commandTree } from '../command-tree.ts';
import type { Cli } from '../context.ts';
import { HELP_EXAMPLES } from '../help-examples.ts';
import { manPages } from '../man-page.ts';

/**
 * `cairn generate --man DIR`: one man page per command, from the commands as registered
 * (command-table.ts loads every one for it) and the examples of their --help.
 */
export function registerGenerate(program: Command, cli: Cli): void {
  program
    .command('generate')
    .description('write documentation generated from the commands: man pages')
    .requiredOption('--man <dir>', 'write one man page per command (cairn.1, cairn-backup.1, ...) into this directory, created if missing')
    .action(async (opts: { man: string }) => {
      const pages = manPages(commandTree(program), VERSION, (path) => HELP_EXAMPLES[path.join(' ')] ?? []);
      await writePages(opts.man, pages);
      cli.output.result(
        { type: 'generate', man: opts.man, pages: [...pages.keys()] },
        `wrote ${pages.size} man pages to ${opts.man} (man ${join(opts.man, 'cairn.1')}, or add its parent to MANPATH)`,
      );
    });
}

/** Each page through a temporary file and a rename: a page is whole or absent, never half-written. */
async function writePages(dir: string, pages: Map<string, string>): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new CairnError('Cairn.Usage', `cannot create the man page directory ${dir}: ${errorMessage(error)}`, {
      hint: 'give --man a directory you can write to',
      cause: error,
    });
  }
  for (const [name, text] of pages) {
    const path = join(dir, name);
    const temporary = `${path}.${process.pid}.tmp`;
    try {
      await writeFile(temporary, text, { mode: 0o644 });
      await rename(temporary, path);
    } catch (error) {
      await rm(temporary, { force: true });
      throw new CairnError('Cairn.Usage', `cannot write the man page ${path}: ${errorMessage(error)}`, {
        hint: 'give --man a directory you can write to',
        cause: error,
      });
    }
  }
}
