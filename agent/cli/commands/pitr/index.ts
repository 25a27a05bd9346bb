import type { Command } from 'commander';
import type { Cli } from '../../context.ts';
import { registerPitrStatus } from './status.ts';

/** `cairn pitr ...`: the log archive's state (docs/pitr.md). */
export function registerPitr(program: Command, cli: Cli): void {
  const pitr = program.command('pitr').description("point-in-time recovery: the log archive's state");
  registerPitrStatus(pitr, cli);
}
