import type { Command } from 'commander';
import type { Cli } from './context.ts';

/** Commands of the log archive (docs/pitr.md). */
export function register(program: Command, cli: Cli): void {
  void program;
  void cli;
}
