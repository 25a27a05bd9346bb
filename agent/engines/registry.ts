import { createEngineCatalog, type EngineCatalog } from '../core/engine-options/catalog.ts';
import { filesSpec } from '../core/engine-options/files.ts';
import { CairnError } from '../core/errors.ts';
import type { Engine } from './engine.ts';
import { etcdKeysEngine } from './etcd-keys.ts';
import { etcdEngine } from './etcd.ts';
import { mariabackupEngine } from './mariabackup.ts';
import { mysqldumpEngine } from './mysqldump.ts';
import { pgdumpEngine } from './pgdump.ts';
import { postgresEngine } from './postgres.ts';

/**
 * The database engines by name, with the catalog of their specs (plus the
 * files engine's, which the archiver implements) for plan validation and
 * capability questions. Commands take a registry, so a test can add an
 * engine of its own through createEngineRegistry; the shipped one is below.
 */
export interface EngineRegistry {
  readonly engines: ReadonlyMap<string, Engine<never>>;
  /** The specs of files and of every engine here, in order. */
  readonly catalog: EngineCatalog;
  /** The engine, or a usage error listing the engines there are. */
  byName(name: string): Engine<unknown>;
}

export function createEngineRegistry(list: ReadonlyArray<Engine<never>>): EngineRegistry {
  const engines = new Map<string, Engine<never>>();
  for (const engine of list) {
    if (engine.name !== engine.spec.name)
      throw new CairnError('Cairn.Usage', `engine ${engine.name} carries the spec of ${engine.spec.name}`, {
        hint: 'take the name from the spec: name: spec.name',
      });
    if (engine.name === filesSpec.name) throw new CairnError('Cairn.Usage', 'the files engine is the archiver, not a registered engine');
    engines.set(engine.name, engine);
  }
  const catalog = createEngineCatalog([filesSpec, ...list.map((e) => e.spec)]);
  return {
    engines,
    catalog,
    byName(name) {
      const engine = engines.get(name) as Engine<unknown> | undefined;
      if (!engine) {
        throw new CairnError('Cairn.Usage', `unknown engine ${JSON.stringify(name)}`, {
          hint: `available: ${catalog.names.join(', ')} (see \`cairn engines\`)`,
        });
      }
      return engine;
    },
  };
}

/**
 * The shipped engines, listed explicitly (importing an engine has no side
 * effect), in the order of ENGINE_SPECS in core/engine-options/catalog.ts:
 * test/agent/engines/registry.test.ts fails when the two lists differ.
 */
export const engineRegistry: EngineRegistry = createEngineRegistry([
  mysqldumpEngine as Engine<never>,
  pgdumpEngine as Engine<never>,
  etcdEngine as Engine<never>,
  etcdKeysEngine as Engine<never>,
  postgresEngine as Engine<never>,
  mariabackupEngine as Engine<never>,
]);

/** The shipped engines by name (what `cairn engines` lists). */
export const engines: ReadonlyMap<string, Engine<never>> = engineRegistry.engines;

export function engineByName(name: string): Engine<unknown> {
  return engineRegistry.byName(name);
}
