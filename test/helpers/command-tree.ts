import { Writable } from 'node:stream';
import type { Command } from 'commander';
import { registerCommands } from '../../agent/cli/command-table.ts';
import { commandTree, type CommandNode } from '../../agent/cli/command-tree.ts';
import { Cli } from '../../agent/cli/context.ts';
import { createProgram } from '../../agent/cli/program.ts';

/** Drops what is written to it: a program built here prints help or errors nowhere. */
class Discard extends Writable {
  override _write(_chunk: unknown, _encoding: BufferEncoding, done: () => void): void {
    done();
  }
}

/** The `cairn` program with every command registered, as `cairn completion` and `cairn generate` see it. */
export async function loadedProgram(): Promise<Command> {
  const cli = new Cli({}, { stdout: new Discard(), stderr: new Discard() });
  const program = createProgram(cli);
  await registerCommands(program, cli, ['node', 'cairn']); // no command named: every one is loaded
  return program;
}

/** commandTree of loadedProgram(). */
export async function loadedCommandTree(): Promise<CommandNode> {
  return commandTree(await loadedProgram());
}
