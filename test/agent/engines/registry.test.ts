import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ENGINE_SPECS, engineCatalog } from '../../../agent/core/engine-options/catalog.ts';
import { collectEngineFlags, engineOptionsFromFlags, flagAttribute } from '../../../agent/core/engine-options/flags.ts';
import type { EngineCommand, EngineFlag } from '../../../agent/core/engine-options/spec.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import type { Engine } from '../../../agent/engines/engine.ts';
import { createEngineRegistry, engineByName, engineRegistry } from '../../../agent/engines/registry.ts';

const COMMANDS: readonly EngineCommand[] = ['backup', 'restore', 'binlog-push'];

describe('the engine registry and the core spec list', () => {
  it('list the same engines, in the same order, with the same spec objects', () => {
    // Core knows engines by ENGINE_SPECS (plans, CDK, functions); the agent by the registry. They may not drift apart.
    assert.deepEqual(engineRegistry.catalog.names, engineCatalog.names);
    engineRegistry.catalog.specs.forEach((spec, i) => assert.equal(spec, ENGINE_SPECS[i], `${spec.name} is the core module's spec`));
    for (const [name, engine] of engineRegistry.engines) {
      assert.equal(engine.name, name);
      assert.equal(engine.spec, engineCatalog.get(name), `${name} carries its core spec`);
      assert.equal(engine.description, engine.spec.description);
    }
    assert.deepEqual(
      [...engineRegistry.engines.keys()],
      engineCatalog.names.filter((n) => n !== 'files'),
    );
  });

  it('answers capability questions from the specs, not from names', () => {
    assert.deepEqual(
      engineCatalog.pitrEngines().map((s) => s.name),
      ['postgres', 'mariadb'],
    );
    assert.equal(engineCatalog.engineOfStream('pg-7301234567890123456')?.name, 'postgres');
    assert.equal(engineCatalog.engineOfStream('mariadb-main')?.name, 'mariadb');
    assert.equal(engineCatalog.engineOfStream('other-1'), undefined);
    assert.deepEqual(
      engineCatalog.specs.filter((s) => s.capabilities.drill).map((s) => s.name),
      ['files', 'mysqldump', 'pgdump', 'etcd', 'etcd-keys', 'postgres', 'mariadb'],
    );
  });

  it('refuses unknown engines with the list, and a registry that would be inconsistent', () => {
    assert.throws(
      () => engineByName('oracle'),
      (e: unknown) => e instanceof CairnError && /unknown engine "oracle"/.test(e.message) && /files, mysqldump, pgdump/.test(e.hint ?? ''),
    );
    const pgdump = engineRegistry.byName('pgdump') as Engine<never>;
    assert.throws(() => createEngineRegistry([pgdump, pgdump]), /listed twice/);
    assert.throws(() => createEngineRegistry([{ ...pgdump, name: 'renamed' }]), /carries the spec of pgdump/);
  });

  it('gives every command each flag once, and every flag fills an option its engines take', () => {
    for (const command of COMMANDS) {
      const flags = collectEngineFlags(engineCatalog.specs, command);
      assert.equal(new Set(flags.map((f) => f.flags.split(' ')[0])).size, flags.length, command);
      for (const spec of engineCatalog.specs) {
        for (const flag of spec.flags) {
          assert.ok(flag.key in spec.schema.shape, `${spec.name}: ${flag.flags} fills ${flag.key}, which its schema has`);
          assert.match(flag.flags, /^--[a-z][a-z-]*(?: <[a-z:]+>)?$/, 'commander syntax');
        }
      }
    }
    const restore = collectEngineFlags(engineCatalog.specs, 'restore').map((f) => f.flags);
    for (const expected of [
      '--jobs <n>',
      '--owner <user>',
      '--etcd-endpoints <urls>',
      '--etcd-cacert <file>',
      '--clear-prefix',
      '--etcd-name <name>',
    ])
      assert.ok(restore.includes(expected), expected);
    const backup = collectEngineFlags(engineCatalog.specs, 'backup').map((f) => f.flags);
    assert.ok(backup.includes('--parallel <n>') && backup.includes('--db-name <name>') && !backup.includes('--jobs <n>'));
    assert.deepEqual(
      collectEngineFlags(engineCatalog.specs, 'binlog-push').map((f) => f.key),
      ['host', 'port', 'socket', 'user', 'passwordFile', 'defaultsFile'],
    );
  });

  it('refuses two different flags of one name', () => {
    const a: EngineFlag = { flags: '--x <v>', description: 'x', key: 'x', commands: ['backup'] };
    const b: EngineFlag = { flags: '--x <v>', description: 'x', key: 'y', commands: ['backup'] };
    const spec = engineCatalog.get('files')!;
    assert.throws(
      () =>
        collectEngineFlags(
          [
            { ...spec, name: 'one', flags: [a] },
            { ...spec, name: 'two', flags: [b] },
          ],
          'backup',
        ),
      /engines one and two define --x differently/,
    );
  });

  it('translates parsed flags into the options each engine validates', () => {
    const parse = (name: string, command: EngineCommand, values: Record<string, unknown>): unknown =>
      engineByName(name).parseOptions(engineOptionsFromFlags(engineCatalog.require(name), command, values));
    const values = {
      dbHost: 'db.internal',
      dbPort: '5433',
      dbName: [],
      jobs: 4,
      parallel: 3,
      etcdEndpoints: 'https://a:2379,https://b:2379',
      etcdCacert: '/etc/ca.pem',
      etcdPrefix: ['/app/'],
      clearPrefix: true,
      force: true,
      owner: 'postgres',
    };
    assert.deepEqual(parse('pgdump', 'restore', values), { host: 'db.internal', port: 5433, databases: [], jobs: 4 });
    assert.deepEqual(parse('mariadb', 'backup', values), { host: 'db.internal', port: 5433, parallel: 3 });
    assert.deepEqual(parse('postgres', 'restore', values), { host: 'db.internal', port: 5433, owner: 'postgres' });
    const etcd = parse('etcd', 'backup', values) as Record<string, unknown>;
    assert.equal(etcd.endpoints, 'https://a:2379,https://b:2379');
    assert.equal(etcd.cacert, '/etc/ca.pem');
    const keys = parse('etcd-keys', 'restore', values) as Record<string, unknown>;
    assert.deepEqual([keys.prefixes, keys.clearPrefix, keys.force], [['/app/'], true, true]);
    assert.equal(
      flagAttribute({ flags: '--etcd-initial-advertise-peer-urls <urls>', description: '', key: 'k', commands: [] }),
      'etcdInitialAdvertisePeerUrls',
    );
  });
});
