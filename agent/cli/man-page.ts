import { ExitCode } from '../core/errors.ts';
import { allNodes, type CommandNode, type OptionNode } from './command-tree.ts';
import type { Example } from './help-examples.ts';

/**
 * What each exit status means, condensed from docs/exit-codes.md (which has the Cairn.* codes
 * and what to do); keyed by ExitCode so that a new status cannot be left out of the pages.
 */
const EXIT_STATUS: Record<keyof typeof ExitCode, string> = {
  ok: 'success',
  failure: 'an unexpected failure (rerun with CAIRN_DEBUG=1 for a stack)',
  usage: 'bad arguments, options, environment or configuration',
  partial: 'done, but some files could not be read or restored (see the warnings)',
  repositoryNotFound: 'no repository at the given location',
  locked: "the repository is locked by another operation, or this operation's lease was lost",
  wrongKey: 'the passphrase opens no key of the repository',
  notFound: 'the snapshot, or a path or pattern in it, does not exist',
  damaged: 'data failed authentication or is missing',
  targetNotEmpty: 'the restore target is not empty (nothing was written)',
  storage: 'the storage failed after retries (disk full, access denied, network)',
  alreadyExists: 'the repository or object already exists',
  cancelled: 'stopped by SIGINT or SIGTERM; nothing was committed',
  outputClosed: 'the reader of the output went away before it ended (cairn snapshots | head)',
  walFetchFailed: 'wal-fetch only: any failure but a file never archived (PostgreSQL stops recovery on it)',
};

/** The page's file name: cairn.1, cairn-backup.1, cairn-key-list.1. */
export function manPageName(node: Pick<CommandNode, 'path'>): string {
  return `${['cairn', ...node.path].join('-')}.1`;
}

/** How a page refers to another: cairn-key(1), in bold. */
function reference(path: string[]): string {
  return `\\fB${roff(['cairn', ...path].join('-'))}\\fR(1)`;
}

/**
 * Text for a roff line: backslashes and hyphens escaped (a hyphen is a minus in option names,
 * which are copied), a leading dot or quote neutralised, anything outside ASCII as \[uXXXX],
 * which groff and mandoc read whatever the input encoding.
 */
export function roff(text: string): string {
  const escaped = text
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/[^\x20-\x7e]/gu, (c) => `\\[u${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}]`);
  return /^[.']/.test(escaped) ? `\\&${escaped}` : escaped;
}

function optionTerm(option: OptionNode): string {
  const names = [option.short, option.long]
    .filter(Boolean)
    .map((n) => `\\fB${roff(n ?? '')}\\fR`)
    .join(', ');
  if (option.valueName === undefined) return names;
  const value = `\\fI${roff(option.valueName)}\\fR`;
  return `${names} ${option.valueOptional ? `[${value}]` : value}`;
}

function optionItem(option: OptionNode): string[] {
  const env = option.envVar ? ` (also from the environment variable ${option.envVar})` : '';
  return ['.TP', optionTerm(option), roff(`${option.description}${env}`)];
}

function exampleLines(examples: readonly Example[]): string[] {
  return examples.flatMap(([what, line]) => ['.PP', roff(`${what}:`), '.PP', '.RS 4', '.nf', `\\fB${roff(line)}\\fR`, '.fi', '.RE']);
}

/** The man page of one command, in the man macros: NAME to SEE ALSO. */
export function manPage(node: CommandNode, version: string, examples: readonly Example[]): string {
  const name = ['cairn', ...node.path].join(' ');
  const description = node.description || 'encrypted, deduplicated, incremental backups';
  const lines = [
    `.TH ${roff(['cairn', ...node.path].join('-').toUpperCase())} 1 "" "cairn ${roff(version)}" "Cairn Manual"`,
    '.SH NAME',
    `${roff(name.replace(/ /g, '-'))} \\- ${roff(description)}`,
    '.SH SYNOPSIS',
    `.B ${roff(name)}`,
    roff(node.usage),
    '.SH DESCRIPTION',
    roff(`${description[0]?.toUpperCase() ?? ''}${description.slice(1)}.`),
  ];
  if (node.subcommands.length > 0) {
    lines.push('.PP', 'Commands:');
    for (const sub of node.subcommands)
      lines.push('.TP', `\\fB${roff(sub.path.join(' '))}\\fR`, `${roff(sub.description)} (${reference(sub.path)})`);
  }
  if (node.arguments.length > 0) {
    lines.push('.SH ARGUMENTS');
    for (const arg of node.arguments)
      lines.push(
        '.TP',
        `\\fI${roff(arg.name)}${arg.variadic ? '...' : ''}\\fR`,
        roff(arg.description || (arg.required ? 'required' : 'optional')),
      );
  }
  lines.push('.SH OPTIONS', ...node.options.flatMap(optionItem));
  if (node.inherited.length > 0) {
    lines.push('.SH GLOBAL OPTIONS', `Accepted here too (see ${reference([])}):`, ...node.inherited.flatMap(optionItem));
  }
  if (examples.length > 0) lines.push('.SH EXAMPLES', ...exampleLines(examples));
  lines.push('.SH EXIT STATUS');
  for (const [key, code] of Object.entries(ExitCode)) lines.push('.TP', `.B ${code}`, roff(EXIT_STATUS[key as keyof typeof ExitCode]));
  lines.push('.PP', roff('With --json a failure also prints its Cairn.* error code and a hint.'));
  // The parents, then the subcommands.
  const related = [...node.path.map((_, i) => node.path.slice(0, i)), ...node.subcommands.map((s) => s.path)];
  if (related.length > 0) lines.push('.SH SEE ALSO', related.map(reference).join(', '));
  return `${lines.join('\n')}\n`;
}

/** Every command's page, by file name, in the order of the tree. */
export function manPages(root: CommandNode, version: string, examplesOf: (path: string[]) => readonly Example[]): Map<string, string> {
  return new Map(allNodes(root).map((node) => [manPageName(node), manPage(node, version, examplesOf(node.path))]));
}
