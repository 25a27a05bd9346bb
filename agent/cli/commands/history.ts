import type { Command } from 'commander';
import { readHistory } from '../../core/history.ts';
import type { Cli } from '../context.ts';

/** `cairn history`: the repository's audit trail. */
export function registerHistory(program: Command, cli: Cli): void {
  program
    .command('history')
    .description("show the repository's audit trail, oldest first")
    .action(async (_opts: unknown, cmd: Command) => {
      const { repo } = await cli.openRepo(cmd);
      const events = await readHistory(repo);
      cli.output.result(
        { type: 'history', events },
        events.map((e) => `${e.time}  ${e.event.padEnd(17)} ${e.user}@${e.host}  ${historyDetail(e)}`).join('\n') || 'no history',
      );
    });
}

function historyDetail(e: Record<string, unknown>): string {
  const skip = new Set(['time', 'event', 'host', 'user', 'tool']);
  return Object.entries(e)
    .filter(([k, v]) => !skip.has(k) && v !== undefined && typeof v !== 'object')
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ')
    .slice(0, 200);
}
