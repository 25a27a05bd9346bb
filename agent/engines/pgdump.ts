import { createWriteStream } from 'node:fs';
import { rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { z } from 'zod';
import { pgdumpSpec } from '../core/engine-options/pgdump.ts';
import { CairnError } from '../core/errors.ts';
import { explainPgError, pgEnvironment, type PgConnection } from '../process/pg-environment.ts';
import { findBinary } from '../process/find-binary.ts';
import { ProcessError, run, stream } from '../process/run.ts';
import { parseEngineOptions } from './engine-helpers.ts';
import type { Engine, EngineContext, SnapshotSink } from './engine.ts';
import { drillPgdump, PGDUMP_DRILL_TOOLS } from './pgdump-drill.ts';

export { pgdumpSpec };
type Options = z.infer<typeof pgdumpSpec.schema>;

/**
 * Logical backups with pg_dump: one custom-format (-Fc) dump per database,
 * plus roles and tablespaces from `pg_dumpall --globals-only`. Restore creates
 * the database (optionally under another name) and runs pg_restore into it.
 */
export const pgdumpEngine: Engine<Options> = {
  name: pgdumpSpec.name,
  description: pgdumpSpec.description,
  spec: pgdumpSpec,
  requires: [
    'pg_dump, pg_dumpall, pg_restore, psql',
    'a role that can read every table (pg_read_all_data or superuser); roles listing needs a superuser for passwords',
  ],

  parseOptions(raw) {
    return parseEngineOptions('pgdump', pgdumpSpec.schema, raw);
  },

  async check(options, ctx) {
    await psql(options, ctx, 'postgres', 'SELECT 1');
  },

  async backup(options, sink, ctx) {
    const version = (await psql(options, ctx, 'postgres', 'SHOW server_version')).trim();
    const databases =
      options.databases.length > 0
        ? options.databases
        : (await psql(options, ctx, 'postgres', 'SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1'))
            .split('\n')
            .filter(Boolean);
    await dumpTo(sink, 'globals.sql', [await findBinary(['pg_dumpall']), '--globals-only'], options, ctx);
    // Uncompressed (-Z 0): the pipeline compresses, and an uncompressed dump deduplicates against the last one.
    for (const db of databases) await dumpTo(sink, `${db}.dump`, [await findBinary(['pg_dump']), '-Fc', '-Z', '0', '-d', db], options, ctx);
    return { serverVersion: version, databases };
  },

  async restore(options, source, ctx) {
    const dumps = (await source.list()).filter((f) => f.path.endsWith('.dump'));
    const target = ctx.target.database;
    if (target && dumps.length !== 1) {
      throw new CairnError('Cairn.Usage', 'restoring under another database name needs a snapshot of exactly one database', {
        hint: 'back up with --db-name NAME to rename on restore',
      });
    }
    const pg = await pgEnvironment(options, ctx.env, ctx.tempDir);
    try {
      for (const file of dumps) {
        const db = target ?? file.path.replace(/\.dump$/, '');
        await run([await findBinary(['createdb']), db], { env: pg.env }).catch((error: unknown) => {
          if (error instanceof ProcessError && /already exists/.test(error.stderr)) return;
          rethrow(error, `creating database ${db}`);
        });
        const restoreTool = await findBinary(['pg_restore']);
        if (options.jobs === 1) {
          // A single-job restore streams the dump from the repository; no local copy.
          await run([restoreTool, '--no-owner', '--exit-on-error', '-d', db], {
            stdin: source.open(file.path),
            env: pg.env,
            signal: ctx.signal,
          }).catch((error: unknown) => rethrow(error, `restoring ${file.path} into ${db}`));
        } else {
          // pg_restore --jobs reads the dump's table of contents at random: the named exception that needs a local file.
          const local = join(ctx.tempDir, 'restore.dump');
          const space = await statfs(ctx.tempDir);
          if (space.bavail * space.bsize < file.size * 1.1 + (64 << 20)) {
            throw new CairnError(
              'Cairn.Failure',
              `not enough free space in ${ctx.tempDir} for a ${file.size}-byte dump (pg_restore --jobs needs a local file)`,
              { hint: 'point --temp-dir elsewhere, or restore with one job (it streams)' },
            );
          }
          await pipeline(source.open(file.path), createWriteStream(local, { mode: 0o600 }));
          try {
            await run([restoreTool, '--no-owner', '--exit-on-error', `--jobs=${options.jobs}`, '-d', db, local], {
              env: pg.env,
              signal: ctx.signal,
            }).catch((error: unknown) => rethrow(error, `restoring ${file.path} into ${db}`));
          } finally {
            await rm(local, { force: true });
          }
        }
        ctx.progress.warn(`restored ${file.path} into database ${db}`);
      }
    } finally {
      await pg.dispose();
    }
  },

  // A private cluster from initdb; never the plan's server (pgdump-drill.ts).
  drill: drillPgdump,
  drillTools: PGDUMP_DRILL_TOOLS,
};

async function dumpTo(sink: SnapshotSink, path: string, argv: string[], options: PgConnection, ctx: EngineContext): Promise<void> {
  const pg = await pgEnvironment(options, ctx.env, ctx.tempDir);
  try {
    const child = stream(argv, { env: pg.env, signal: ctx.signal });
    await Promise.all([sink.addStream(path, child.stdout), child.done.catch((error: unknown) => rethrow(error, `dumping ${path}`))]);
  } finally {
    await pg.dispose();
  }
}

async function psql(options: PgConnection, ctx: EngineContext, db: string, sql: string): Promise<string> {
  const pg = await pgEnvironment(options, ctx.env, ctx.tempDir);
  try {
    return (
      await run([await findBinary(['psql']), '-d', db, '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: pg.env }).catch(
        (error: unknown) => rethrow(error, 'connecting'),
      )
    ).stdout;
  } finally {
    await pg.dispose();
  }
}

function rethrow(error: unknown, doing: string): never {
  if (error instanceof ProcessError)
    throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, {
      hint: explainPgError(error.stderr) ?? error.hint,
      cause: error,
    });
  throw error;
}
