import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { defineEngineSpec } from '../../../agent/core/engine-options/spec.ts';
import { collectEngineFlags, engineOptionsFromFlags } from '../../../agent/core/engine-options/flags.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { parseEnvironmentConfig, parsePlan } from '../../../agent/core/plan.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import type { Engine } from '../../../agent/engines/engine.ts';
import { parseEngineOptions } from '../../../agent/engines/engine-helpers.ts';
import { createEngineRegistry, engineRegistry } from '../../../agent/engines/registry.ts';
import { backupDir, fileRepo, initSmallRepo, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * The recipe of docs/architecture.md ("Adding an engine"), followed by a test:
 * a spec (what core/engine-options/<engine>.ts would hold), an engine carrying
 * it, and a registry made with createEngineRegistry. The engine copies the
 * files of a directory (logical, no server), so backup and restore run for real.
 */
const testKvSpec = defineEngineSpec({
  name: 'test-kv',
  description: 'test only: the files of one directory, one stream each',
  schema: z.object({
    /** The directory whose files are backed up. */
    dir: z.string().regex(/^\//, 'an absolute path'),
    /** A label recorded in the metadata. */
    label: z.string().default('unlabelled'),
  }),
  flags: [
    { flags: '--kv-dir <dir>', description: 'test-kv: the directory', key: 'dir', commands: ['backup', 'restore'] },
    { flags: '--kv-label <label>', description: 'test-kv: a label', key: 'label', commands: ['backup'] },
  ],
  capabilities: { kind: 'logical', drill: false },
});
type TestKvOptions = z.infer<typeof testKvSpec.schema>;

const testKvEngine: Engine<TestKvOptions> = {
  name: testKvSpec.name,
  description: testKvSpec.description,
  spec: testKvSpec,
  requires: [],
  parseOptions: (raw) => parseEngineOptions('test-kv', testKvSpec.schema, raw),
  async check(options) {
    await readdir(options.dir);
  },
  async backup(options, sink) {
    const names = (await readdir(options.dir)).sort();
    for (const name of names)
      await sink.addStream(
        name,
        (async function* () {
          yield await readFile(join(options.dir, name));
        })(),
      );
    return { label: options.label, files: names.length };
  },
  async restore(options, source) {
    await mkdir(options.dir, { recursive: true });
    for (const file of await source.list()) {
      const chunks: Buffer[] = [];
      for await (const chunk of source.open(file.path)) chunks.push(chunk as Buffer);
      await writeFile(join(options.dir, file.path), Buffer.concat(chunks));
    }
  },
};

const registry = createEngineRegistry([...engineRegistry.engines.values(), testKvEngine as Engine<never>]);

function plan(engine: string, engineOptions: Record<string, unknown>): Record<string, unknown> {
  return {
    id: 'kv-plan',
    targets: { instanceIds: ['i-0123456789abcdef0'] },
    engine,
    engineOptions,
    schedule: { expression: 'rate(1 day)' },
    retention: { keepLast: 3 },
    keySource: { passphraseParameter: '/cairn/test/kv/passphrase' },
    rpo: '26h',
    repository: { url: 's3://cairn-test-bucket/plans/kv/' },
  };
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CairnError, String(error));
    return error.message;
  }
  assert.fail('expected a refusal');
}

describe('a test-only engine added through createEngineRegistry', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('test-engine');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => work?.remove());

  it('backs up and restores through the backup and restore library functions', async () => {
    const source = join(work.path, 'source');
    await mkdir(source);
    const contents = new Map([
      ['a.bin', randomBytes(200_000)],
      ['b.txt', Buffer.from('hello\n')],
      ['empty', Buffer.alloc(0)],
    ]);
    for (const [name, data] of contents) await writeFile(join(source, name), data);

    const engine = registry.byName('test-kv');
    const options = engine.parseOptions(engineOptionsFromFlags(testKvSpec, 'backup', { kvDir: source, kvLabel: 'nightly' }));
    const snapshot = await backupDir(repo, source, { paths: [], engine: { engine, options, source: 'test-kv:source' } });
    assert.equal(snapshot.engine, 'test-kv');
    assert.deepEqual(snapshot.engineMetadata, { label: 'nightly', files: 3 });
    assert.equal(snapshot.summary.totalFiles, 3);

    const restored = join(work.path, 'restored');
    const done = await restoreTo(repo, snapshot.id, restored, { engines: registry, engineOptions: { dir: restored } });
    assert.equal(done.snapshot.id, snapshot.id);
    assert.deepEqual((await readdir(restored)).sort(), [...contents.keys()].sort());
    for (const [name, data] of contents) assert.ok((await readFile(join(restored, name))).equals(data), name);

    // The shipped registry does not know the engine the snapshot names.
    await assert.rejects(
      restoreTo(repo, snapshot.id, join(work.path, 'refused'), { engineOptions: { dir: join(work.path, 'refused') } }),
      (error: unknown) => error instanceof CairnError && /unknown engine "test-kv"/.test(error.message),
    );
  });

  it('refuses options its schema refuses, naming the field', () => {
    assert.match(
      refusal(() => registry.byName('test-kv').parseOptions({ dir: 'relative' })),
      /invalid test-kv options: .*an absolute path[\s\S]*dir/,
    );
  });

  it('validates plans against a schema built with that registry, and the shipped one refuses them', () => {
    const parsed = parsePlan(plan('test-kv', { dir: '/srv/kv' }), 'test', registry.catalog);
    assert.equal(parsed.engine, 'test-kv');
    assert.deepEqual(parsed.engineOptions, { dir: '/srv/kv' });
    assert.match(
      refusal(() => parsePlan(plan('test-kv', { dir: '/srv/kv' }), 'test')),
      /plan kv-plan: engine: unknown engine "test-kv": one of files, /,
    );
    assert.match(
      refusal(() => parsePlan(plan('test-kv', { dir: 'srv' }), 'test', registry.catalog)),
      /plan kv-plan: engineOptions\.dir: an absolute path/,
    );
    assert.match(
      refusal(() => parsePlan(plan('test-kv', { dir: '/srv', jobs: 4 }), 'test', registry.catalog)),
      /engineOptions\.jobs: jobs is for the pgdump engine, not test-kv/,
    );
    assert.match(
      refusal(() => parsePlan(plan('test-kv', { dir: '/srv', connection: { socket: '/run/x.sock' } }), 'test', registry.catalog)),
      /engineOptions\.connection\.socket: socket is for the mysqldump, pgdump, postgres, mariadb engines, not test-kv/,
    );
    assert.match(
      refusal(() => parsePlan(plan('test-kv', { dir: '/srv', pitr: true }), 'test', registry.catalog)),
      /engineOptions\.pitr: pitr is not an option of the test-kv engine \(its options: dir, label/,
    );
    // Its capabilities count: no point-in-time recovery, no drill.
    assert.match(
      refusal(() => parsePlan({ ...plan('test-kv', { dir: '/srv' }), pitr: { enabled: true } }, 'test', registry.catalog)),
      /pitr\.enabled: point-in-time recovery .*not test-kv/,
    );
    const config = {
      account: '123456789012',
      region: 'eu-central-1',
      plans: [{ ...plan('test-kv', { dir: '/srv' }), repository: undefined }],
    };
    assert.equal(parseEnvironmentConfig(config, 'test', registry.catalog).plans[0]!.engine, 'test-kv');
    assert.match(
      refusal(() => parseEnvironmentConfig(config, 'test')),
      /env test, plan kv-plan: engine: unknown engine "test-kv"/,
    );
  });

  it('gives the CLI its flags next to the shipped ones', () => {
    const backupFlags = collectEngineFlags(registry.catalog.specs, 'backup').map((f) => f.flags);
    assert.ok(
      backupFlags.includes('--kv-dir <dir>') && backupFlags.includes('--kv-label <label>') && backupFlags.includes('--db-host <host>'),
    );
    const restoreFlags = collectEngineFlags(registry.catalog.specs, 'restore').map((f) => f.flags);
    assert.ok(restoreFlags.includes('--kv-dir <dir>') && !restoreFlags.includes('--kv-label <label>'));
  });
});
