import type { Argument, Command, Option } from 'commander';

/**
 * The registered commander program as plain data, for what is generated from it (shell
 * completion, man pages, the help examples' check): every command with its path, its own
 * options (the help flag included) and the options it inherits, its arguments and
 * subcommands. Read from the live tree, so a new command or flag shows up everywhere at once.
 */
export interface CommandNode {
  /** Words after `cairn`: [] for the program, ['key', 'list'] for `cairn key list`. */
  path: string[];
  description: string;
  /** What follows the command's name in its usage line: `[options] [path...]`, `[options] [command]`. */
  usage: string;
  options: OptionNode[];
  /** Options of the commands above it, accepted after this command's name too (commander's default). */
  inherited: OptionNode[];
  arguments: ArgumentNode[];
  subcommands: CommandNode[];
}

/** What a value is, so that a shell completes it: a local file, a directory, one of a list, or anything. */
export type ValueKind = { kind: 'file' } | { kind: 'dir' } | { kind: 'choice'; choices: string[] } | { kind: 'any' };

export interface OptionNode {
  /** As declared: `-e, --exclude <pattern>`. */
  flags: string;
  short?: string;
  long?: string;
  description: string;
  /** The placeholder of its value (`pattern`), undefined for a flag without a value. */
  valueName?: string;
  valueOptional: boolean;
  /** Given more than once, each value kept (its default is a list: collect()). */
  repeatable: boolean;
  value?: ValueKind;
  /** The environment variable it is read from too (`.env()`). */
  envVar?: string;
}

export interface ArgumentNode {
  name: string;
  description: string;
  required: boolean;
  variadic: boolean;
  value: ValueKind;
}

/** Every command of the tree, the program first, each parent before its subcommands. */
export function allNodes(root: CommandNode): CommandNode[] {
  return [root, ...root.subcommands.flatMap(allNodes)];
}

export function commandTree(program: Command): CommandNode {
  return nodeOf(program, [], []);
}

function nodeOf(cmd: Command, path: string[], inherited: OptionNode[]): CommandNode {
  const help = cmd.createHelp();
  const options = help.visibleOptions(cmd).map(optionNode);
  const own = new Set(options.map((o) => o.long ?? o.short));
  const args = cmd.registeredArguments.map((a, i) => argumentNode(a, cmd.registeredArguments.slice(0, i)));
  // Hidden ones left out, as --help leaves them; and commander's implicit `help`, which is not in cmd.commands.
  const subcommands = help.visibleCommands(cmd).filter((c) => cmd.commands.includes(c));
  const kept = inherited.filter((o) => !own.has(o.long ?? o.short));
  // What its subcommands inherit: all but the help flag, which each has its own, and --version, which only the program has.
  const below = [...kept, ...options].filter((o) => o.long !== '--help' && o.long !== '--version');
  return {
    path,
    description: cmd.description(),
    usage: cmd.usage(),
    options,
    inherited: kept,
    arguments: args,
    subcommands: subcommands.map((c) => nodeOf(c, [...path, c.name()], below)),
  };
}

function optionNode(option: Option): OptionNode {
  const valueName = /[<[]([^>\]]+)[>\]]/.exec(option.flags)?.[1];
  const value: ValueKind | undefined =
    valueName === undefined ? undefined : option.argChoices ? { kind: 'choice', choices: option.argChoices } : valueKind(valueName);
  return {
    flags: option.flags,
    ...(option.short ? { short: option.short } : {}),
    ...(option.long ? { long: option.long } : {}),
    description: option.description,
    ...(valueName !== undefined ? { valueName } : {}),
    valueOptional: option.optional,
    repeatable: Array.isArray(option.defaultValue),
    ...(value ? { value } : {}),
    ...(option.envVar ? { envVar: option.envVar } : {}),
  };
}

/**
 * An argument after a snapshot (`dump <snapshot> <file>`, `ls <snapshot> [path]`) names a path
 * inside that snapshot, which the local file system cannot complete; any other path, file or
 * directory argument is a local one.
 */
function argumentNode(argument: Argument, before: readonly Argument[]): ArgumentNode {
  const insideSnapshot = before.some((a) => /^(snapshot|a|b)$/.test(a.name()));
  return {
    name: argument.name(),
    description: argument.description,
    required: argument.required,
    variadic: argument.variadic,
    value: argument.argChoices
      ? { kind: 'choice', choices: argument.argChoices }
      : insideSnapshot
        ? { kind: 'any' }
        : valueKind(argument.name()),
  };
}

/**
 * The placeholder names the commands use for local paths: <file>, <path>, <dest> are files,
 * <dir> a directory, and <url> a repository, which is a directory when it is local.
 */
function valueKind(placeholder: string): ValueKind {
  if (/^(file|path|dest)$/.test(placeholder)) return { kind: 'file' };
  if (/^(dir|url)$/.test(placeholder)) return { kind: 'dir' };
  return { kind: 'any' };
}
