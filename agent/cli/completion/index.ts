import type { CommandNode } from '../command-tree.ts';
import { bashCompletion } from './bash.ts';
import { fishCompletion } from './fish.ts';
import { zshCompletion } from './zsh.ts';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

/** The completion script of one shell for the command tree. */
export function completionScript(shell: Shell, root: CommandNode, version: string): string {
  if (shell === 'bash') return bashCompletion(root, version);
  if (shell === 'zsh') return zshCompletion(root, version);
  return fishCompletion(root, version);
}
