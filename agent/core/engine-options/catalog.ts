import { CairnError } from '../errors.ts';
import { etcdKeysSpec } from './etcd-keys.ts';
import { etcdSpec } from './etcd.ts';
import { filesSpec } from './files.ts';
import { mariadbSpec } from './mariadb.ts';
import { mysqldumpSpec } from './mysqldump.ts';
import { pgdumpSpec } from './pgdump.ts';
import { postgresSpec } from './postgres.ts';
import type { EngineSpec, PitrLogKind } from './spec.ts';

/**
 * The shipped engines' specs: the list core, the CDK app and the functions
 * know engines by. agent/engines/registry.ts lists the same engines'
 * implementations (each re-exporting its spec); test/agent/engines/registry.test.ts
 * fails when the two lists differ, so an engine cannot be half added.
 */
export const ENGINE_SPECS: readonly EngineSpec[] = [
  filesSpec,
  mysqldumpSpec,
  pgdumpSpec,
  etcdSpec,
  etcdKeysSpec,
  postgresSpec,
  mariadbSpec,
];

/** Engines by name, and the questions core asks of their capabilities. */
export interface EngineCatalog {
  readonly specs: readonly EngineSpec[];
  readonly names: readonly string[];
  get(name: string): EngineSpec | undefined;
  /** The spec, or a usage error listing the engines there are. */
  require(name: string): EngineSpec;
  /** Engines whose snapshots can be the base of a point-in-time restore. */
  pitrEngines(): EngineSpec[];
  /** The engine whose log a stream holds (by the stream's prefix), if any. */
  engineOfStream(stream: string): EngineSpec | undefined;
  /** The engines whose snapshots a log of this kind can be replayed onto. */
  enginesOfLog(log: PitrLogKind): EngineSpec[];
}

export function createEngineCatalog(specs: readonly EngineSpec[]): EngineCatalog {
  const byName = new Map<string, EngineSpec>();
  for (const spec of specs) {
    if (byName.has(spec.name)) throw new CairnError('Cairn.Usage', `engine ${spec.name} is listed twice`);
    byName.set(spec.name, spec);
  }
  if (!byName.has('files'))
    throw new CairnError('Cairn.Usage', 'the files engine must be in every engine list (snapshots of files name it)');
  const names = [...byName.keys()];
  return {
    specs,
    names,
    get: (name) => byName.get(name),
    require(name) {
      const spec = byName.get(name);
      if (!spec) {
        throw new CairnError('Cairn.Usage', `unknown engine ${JSON.stringify(name)}`, {
          hint: `available: ${names.join(', ')} (see \`cairn engines\`)`,
        });
      }
      return spec;
    },
    pitrEngines: () => specs.filter((s) => s.capabilities.pitr !== undefined),
    engineOfStream: (stream) => specs.find((s) => s.capabilities.pitr !== undefined && stream.startsWith(s.capabilities.pitr.streamPrefix)),
    enginesOfLog: (log) => specs.filter((s) => s.capabilities.pitr?.log === log),
  };
}

/** The shipped engines. */
export const engineCatalog: EngineCatalog = createEngineCatalog(ENGINE_SPECS);
