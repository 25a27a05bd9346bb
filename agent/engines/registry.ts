import { CairnError } from '../core/errors.ts';
import type { Engine } from './engine.ts';
import { mysqldumpEngine } from './mysqldump.ts';
import { pgdumpEngine } from './pgdump.ts';
import { etcdEngine } from './etcd.ts';
import { etcdKeysEngine } from './etcd-keys.ts';
import { postgresEngine } from './postgres.ts';
import { mariabackupEngine } from './mariabackup.ts';

/** Every engine, listed explicitly: importing an engine has no side effect. */
export const engines: ReadonlyMap<string, Engine<never>> = new Map<string, Engine<never>>([
  [mysqldumpEngine.name, mysqldumpEngine as Engine<never>],
  [pgdumpEngine.name, pgdumpEngine as Engine<never>],
  [etcdEngine.name, etcdEngine as Engine<never>],
  [etcdKeysEngine.name, etcdKeysEngine as Engine<never>],
  [postgresEngine.name, postgresEngine as Engine<never>],
  [mariabackupEngine.name, mariabackupEngine as Engine<never>],
]);

export function engineByName(name: string): Engine<unknown> {
  const engine = engines.get(name) as Engine<unknown> | undefined;
  if (!engine) {
    throw new CairnError('Cairn.Usage', `unknown engine ${JSON.stringify(name)}`, {
      hint: `available: files, ${[...engines.keys()].join(', ')} (see \`cairn engines\`)`,
    });
  }
  return engine;
}
