import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CommanderError, type Command } from 'commander';
import { allNodes } from '../../../agent/cli/command-tree.ts';
import { commandPath, HELP_EXAMPLES } from '../../../agent/cli/help-examples.ts';
import { runCliText } from '../../helpers/cli.ts';
import { loadedCommandTree, loadedProgram } from '../../helpers/command-tree.ts';

/**
 * The words of a command line as a POSIX shell splits them: single and double quotes, a
 * backslash outside quotes; it stops at a redirection or pipe (`> file`), which is the shell's.
 */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      assert.ok(end > i, `unbalanced quote in ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '\\') word = (word ?? '') + (line[++i] ?? '');
    else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (word === undefined && /[<>|;&]/.test(c)) return words;
    else word = (word ?? '') + c;
  }
  if (word !== undefined) words.push(word);
  return words;
}

/**
 * Parses a command line with the real program, every action replaced by one that records which
 * command ran: commander checks the command path, the options and their values, required options
 * and arguments, and the option parsers (--concurrency's) run, as for a real run.
 */
async function parsedCommand(args: string[]): Promise<string> {
  const program = (await loadedProgram()).exitOverride();
  let ran: string | undefined;
  const stub = (cmd: Command): void => {
    cmd.exitOverride().action((...given: unknown[]) => {
      ran = commandPath(given.at(-1) as Command);
    });
    cmd.commands.forEach(stub);
  };
  program.commands.forEach(stub);
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (error) {
    // `cairn help backup` shows backup's help (commander.help), as --help does (commander.helpDisplayed).
    if (error instanceof CommanderError && (error.code === 'commander.help' || error.code === 'commander.helpDisplayed')) return 'help';
    throw error;
  }
  assert.ok(ran !== undefined, `no command ran for ${args.join(' ')}`);
  return ran;
}

describe('an example in every command’s --help', () => {
  it('every registered command, the program included, shows its examples at the end of its --help', async () => {
    const root = await loadedCommandTree();
    for (const node of allNodes(root)) {
      const key = node.path.join(' ');
      const examples = HELP_EXAMPLES[key];
      assert.ok(examples && examples.length > 0, `cairn ${key} has no example in agent/cli/help-examples.ts`);
      // Through main(), which loads only the command named: the examples are added on that path too.
      const help = await runCliText([...node.path, '--help'], {});
      assert.equal(help.code, 0, help.stderr);
      const after = help.stdout.split('\nExamples:\n')[1];
      assert.ok(after !== undefined, `cairn ${key} --help has no Examples section`);
      for (const [what, line] of examples) assert.ok(after.includes(`# ${what}\n  ${line}\n`), `cairn ${key} --help shows ${line}`);
    }
  });

  it('every example is a command line the program accepts, and runs the command it is listed under (or one of its subcommands)', async () => {
    const paths = new Set(allNodes(await loadedCommandTree()).map((n) => n.path.join(' ')));
    for (const [key, examples] of Object.entries(HELP_EXAMPLES)) {
      assert.ok(paths.has(key), `help-examples.ts lists "${key}", which is no command`);
      for (const [, line] of examples) {
        const [cairn, ...args] = shellWords(line);
        assert.equal(cairn, 'cairn', line);
        const ran = await parsedCommand(args).catch((error: unknown) => assert.fail(`${line}: ${String(error)}`));
        // The program's examples may run any command (or its help); a command's run it or one of its subcommands.
        if (key !== '') assert.ok(ran === key || ran.startsWith(`${key} `), `${line} runs cairn ${ran}, not cairn ${key}`);
      }
    }
  });

  it('the parse check refuses a mistyped option, a missing value, a subcommand that does not exist, a missing required option and a bad value', async () => {
    await assert.rejects(parsedCommand(['backup', '/srv', '--exclud', '*.log']), /unknown option '--exclud'/);
    await assert.rejects(parsedCommand(['restore', 'latest', '--target']), /argument missing/);
    await assert.rejects(parsedCommand(['key', 'lst']), /too many arguments for 'key'/);
    await assert.rejects(parsedCommand(['agent', 'archive']), /--plan-id <id>' not specified/);
    await assert.rejects(parsedCommand(['--concurrency', '0', 'check']), /from 1 to 64/);
    assert.deepEqual(shellWords(`cairn find '*.conf' --tag "a b" x\\ y > out`), ['cairn', 'find', '*.conf', '--tag', 'a b', 'x y']);
  });
});
