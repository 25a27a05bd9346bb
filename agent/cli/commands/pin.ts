import type { Command } from 'commander';
import { shortId } from '../../core/snapshot.ts';
import { setPin } from '../../commands/forget.ts';
import { operationContext } from '../../commands/operation.ts';
import type { Cli } from '../context.ts';

/** `cairn pin` and `cairn unpin`: keep a snapshot whatever the retention policy says, or stop keeping it. */
export function registerPin(program: Command, cli: Cli): void {
  for (const [name, pinned] of [
    ['pin', true],
    ['unpin', false],
  ] as const) {
    program
      .command(name)
      .description(
        pinned ? 'keep a snapshot whatever the retention policy says' : 'let the retention policy decide about a pinned snapshot again',
      )
      .argument('<snapshot>', 'snapshot id or unique prefix')
      .action(async (ref: string, _opts: unknown, cmd: Command) => {
        const { g, repo, storage } = await cli.openRepo(cmd);
        const snapshot = await setPin(repo, storage, ref, pinned, operationContext(repo, cli.operation(g)));
        cli.output.result({ type: name, snapshotId: snapshot.id }, `${pinned ? 'pinned' : 'unpinned'} snapshot ${shortId(snapshot.id)}`);
      });
  }
}
