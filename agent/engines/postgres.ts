import { chmod } from 'node:fs/promises';
import { extract, type Header } from 'tar-stream';
import type { z } from 'zod';
import { postgresSpec } from '../core/engine-options/postgres.ts';
import { CairnError } from '../core/errors.ts';
import { systemIdentifier } from '../process/pg-control.ts';
import { explainPgError, pgEnvironment } from '../process/pg-environment.ts';
import { ProcessError, stream } from '../process/run.ts';
import { giveTo, parseEngineOptions, requireEmptyTarget, requireOwner } from './engine-helpers.ts';
import type { Engine, EngineMetadata, SnapshotSink } from './engine.ts';
import { drillPostgres, postgresDrillTools } from './postgres-drill.ts';

export { postgresSpec };
type Options = z.infer<typeof postgresSpec.schema>;

/**
 * Physical backups with pg_basebackup, streamed: `-D - -Ft -X fetch` writes one
 * tar (WAL included) to stdout, which is split back into the cluster's files as
 * it arrives, so each file is stored on its own (and deduplicated against the
 * last backup) with no local copy. PostgreSQL refuses `-X stream` to stdout and
 * clusters with extra tablespaces (more than one tar): both are refused clearly.
 * Restore writes the files into an empty directory, ready to start.
 */
export const postgresEngine: Engine<Options> = {
  name: postgresSpec.name,
  description: postgresSpec.description,
  spec: postgresSpec,
  requires: ['pg_basebackup', 'a role with REPLICATION (and a pg_hba.conf replication entry)', 'no extra tablespaces'],

  parseOptions(raw) {
    return parseEngineOptions('postgres', postgresSpec.schema, raw);
  },

  async check() {
    // pg_basebackup itself reports a refused login or a missing replication entry, with the hint below.
  },

  async backup(options, sink, ctx) {
    const pg = await pgEnvironment(options, ctx.env, ctx.tempDir);
    const metadata: EngineMetadata = {};
    try {
      const child = stream(['pg_basebackup', '-D', '-', '-F', 't', '-X', 'fetch', '-c', 'fast', '-v', '--no-password'], {
        env: pg.env,
        signal: ctx.signal,
        onStderr: (line) => {
          const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/.exec(line);
          if (start) {
            metadata.startLsn = start[1];
            metadata.timeline = Number(start[2]);
          }
          const end = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/.exec(line);
          if (end) metadata.stopLsn = end[1];
          if (/tablespace/i.test(line) && /not supported|only/i.test(line)) ctx.progress.warn(`pg_basebackup: ${line}`);
        },
      });
      await Promise.all([
        splitTar(child.stdout, sink, (id) => (metadata.systemIdentifier = id)),
        child.done.catch((error: unknown) => {
          if (error instanceof ProcessError) {
            throw new CairnError('Cairn.Failure', `pg_basebackup failed: ${error.message}`, {
              hint:
                explainPgError(error.stderr) ??
                (/tablespace/i.test(error.stderr)
                  ? 'clusters with extra tablespaces cannot be streamed to stdout; use the pgdump engine'
                  : 'the role needs REPLICATION and pg_hba.conf a replication entry'),
              cause: error,
            });
          }
          throw error;
        }),
      ]);
    } finally {
      await pg.dispose();
    }
    if (!metadata.startLsn)
      throw new CairnError('Cairn.Failure', 'pg_basebackup did not report its start point; the backup cannot be trusted');
    return metadata;
  },

  async restore(options, source, ctx) {
    await requireOwner(options.owner, ctx.env);
    // pg_control last, as pgBackRest does: PostgreSQL will not start a data directory without it, so a
    // restore stopped anywhere before its end leaves one it refuses, not one that starts with files missing.
    // (A snapshot without one, or --include leaving it out, writes none: placeLast has nothing to move.)
    const last = [PG_CONTROL];
    const target = await requireEmptyTarget(ctx.target.directory, 'the PostgreSQL data directory');
    await source.restoreTo(target, { partial: last });
    // PostgreSQL refuses a data directory that others can read.
    await chmod(target, 0o700);
    await giveTo(target, options.owner, ctx.env);
    await ctx.placeLast(target, last);
  },

  drillTools: postgresDrillTools,

  /** Started privately (no TCP, archive_mode=off, no standby); consistent, pg_amcheck on every database, pg_checksums after a clean stop. */
  async drill(source, ctx) {
    return drillPostgres(source, ctx);
  },
};

const PG_CONTROL = 'global/pg_control';

/**
 * Files of the tar go into the snapshot one by one, in stream order. Exported for the tar fuzzer.
 * A malformed or cut-off tar (tar-stream's own plain errors) is Cairn.Failure; an error of the sink
 * is passed on as it is.
 */
export async function splitTar(input: NodeJS.ReadableStream, sink: SnapshotSink, onSystemIdentifier: (id: string) => void): Promise<void> {
  const tar = extract();
  const storeErrors = new Set<unknown>();
  const done = new Promise<void>((resolve, reject) => {
    tar.on('finish', resolve);
    tar.on('error', (error: Error) => {
      reject(storeErrors.has(error) || error.constructor !== Error ? error : malformed(error));
    });
  });
  tar.on('entry', (header: Header, body, next) => {
    // A body cut off by the end of the input is destroyed with tar-stream's "Unexpected end of data", which the extract
    // reports too (rejecting `done`): without a listener here the entry's copy of the error would be uncaught and end the process.
    body.on('error', () => undefined);
    // tar-stream's entries are streamx readables of Buffers.
    const data = body as unknown as AsyncIterable<Buffer> & { resume(): unknown };
    // The WAL archive's stream is named after the cluster (pg-<system identifier>): recording it ties this base backup to its WAL.
    const read =
      header.name === 'global/pg_control'
        ? Object.assign(peekSystemIdentifier(data, onSystemIdentifier), { resume: () => data.resume() })
        : data;
    void store(header, read, sink).then(
      () => next(),
      (error: unknown) => {
        // A body failing because the extract already failed carries the extract's own error: that one is not the sink's.
        if (!tar.destroying) storeErrors.add(error);
        next(error as Error);
      },
    );
  });
  input.pipe(tar);
  await done;
}

function malformed(cause: Error): CairnError {
  return new CairnError('Cairn.Failure', `the tar from pg_basebackup is malformed or cut off: ${cause.message}`, {
    hint: 'pg_basebackup stopped early or its output was damaged; its own error, if any, is reported with this one',
    cause,
  });
}

async function* peekSystemIdentifier(body: AsyncIterable<Buffer>, found: (id: string) => void): AsyncIterable<Buffer> {
  let head = Buffer.alloc(0);
  for await (const chunk of body) {
    if (head.length < 8) {
      head = Buffer.concat([head, chunk]);
      if (head.length >= 8) found(systemIdentifier(head));
    }
    yield chunk;
  }
}

async function store(header: Header, body: AsyncIterable<Buffer> & { resume(): unknown }, sink: SnapshotSink): Promise<void> {
  const meta = { mode: header.mode ?? 0o600, mtimeMs: header.mtime?.getTime() };
  if (header.type === 'directory') {
    await sink.addDirectory(header.name, meta);
    body.resume();
  } else if (header.type === 'symlink') {
    await sink.addSymlink(header.name, header.linkname ?? '', meta);
    body.resume();
  } else if (header.type === 'file' || header.type === 'contiguous-file') {
    await sink.addStream(header.name, body, meta);
  } else {
    body.resume();
  }
}
