import type { Engine, SnapshotSource } from '../../agent/engines/engine.ts';
import { createEngineRegistry, engineRegistry, type EngineRegistry } from '../../agent/engines/registry.ts';

/** What a restore through registryStoppingAfterFiles throws once the snapshot's files are written. */
export const STOPPED_AFTER_FILES = 'stopped after writing the files';

/**
 * The shipped engines, with `name`'s restore stopped right after its source wrote the snapshot's
 * files: where a kill, an outage or a full disk would leave a restore, short of the engine's own
 * last steps (prepare, ownership, the files it places last).
 */
export function registryStoppingAfterFiles(name: string): EngineRegistry {
  const shipped = engineRegistry.byName(name);
  const stopping = {
    ...shipped,
    restore: (options: never, source: SnapshotSource, ctx: Parameters<Engine['restore']>[2]) =>
      shipped.restore(
        options,
        {
          metadata: source.metadata,
          list: () => source.list(),
          open: (path) => source.open(path),
          restoreTo: async (directory, restoreOptions) => {
            await source.restoreTo(directory, restoreOptions);
            throw new Error(STOPPED_AFTER_FILES);
          },
        },
        ctx,
      ),
  } as Engine<never>;
  return createEngineRegistry([...[...engineRegistry.engines.values()].filter((e) => e.name !== name), stopping]);
}
