import { Option, type Command } from 'commander';
import { collectEngineFlags, collectValues, flagHelp } from '../core/engine-options/flags.ts';
import type { EngineCommand, EngineFlag, EngineSpec } from '../core/engine-options/spec.ts';

/**
 * The engine flags of backup, restore and binlog-push, generated from the
 * engines' specs (core/engine-options/<engine>.ts): each engine lists its
 * flags once, there, and the CLI only turns them into commander Options. The
 * parsed values go back to one engine with engineOptionsFromFlags (flags.ts).
 */

/** A commander Option for an engine flag, with its help on this command, its environment variable and its parser. */
export function engineOption(flag: EngineFlag, command: EngineCommand): Option {
  const option = new Option(flag.flags, flagHelp(flag, command));
  if (flag.env) option.env(flag.env);
  if (flag.repeatable) option.argParser(flag.parse ?? collectValues).default([]);
  else if (flag.parse) option.argParser(flag.parse);
  return option;
}

/**
 * Adds the flags these engines take on `command`, each once. Flags a command
 * defines itself for every engine (restore's --force) are left to it; their
 * values still reach the engines that read them.
 */
export function addEngineFlags(cmd: Command, command: EngineCommand, specs: Iterable<EngineSpec>): Command {
  for (const flag of collectEngineFlags(specs, command)) if (!flag.commandFlag) cmd.addOption(engineOption(flag, command));
  return cmd;
}
