import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CairnError } from '../../agent/core/errors.ts';
import {
  awsS3Location,
  engineOptionsOfPlan,
  parseEnvironmentConfig,
  parsePlan,
  pitrOf,
  walCairnArgs,
  planParameterName,
  referencedParameters,
  repositoryEndpoint,
  repositoryLocation,
  rpoSeconds,
  type EnvironmentConfigInput,
  type PlanInput,
} from '../../agent/core/plan.ts';

function plan(overrides: Partial<PlanInput> = {}): PlanInput {
  return {
    id: 'orders-db',
    targets: { instanceIds: ['i-0123456789abcdef0'] },
    engine: 'pgdump',
    engineOptions: { connection: { host: '127.0.0.1', port: 5432, user: 'backup' }, passwordParameter: '/cairn/test/orders-db/password' },
    schedule: { expression: 'cron(0 2 * * ? *)' },
    retention: { keepDaily: 7 },
    keySource: { passphraseParameter: '/cairn/test/orders-db/passphrase' },
    rpo: '26h',
    ...overrides,
  };
}

function env(plans: PlanInput[], extra: Partial<EnvironmentConfigInput> = {}): EnvironmentConfigInput {
  return { account: '123456789012', region: 'eu-central-1', plans, ...extra };
}

function configError(fn: () => unknown): CairnError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CairnError, `expected a CairnError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected the config to be rejected');
}

describe('environment config', () => {
  test('a minimal config resolves defaults: bucket name, repository URL, timeouts, time zone', () => {
    const config = parseEnvironmentConfig(env([plan()]), 'test');
    assert.equal(config.repository.bucketName, 'cairn-test-123456789012-eu-central-1');
    assert.equal(config.repository.noncurrentVersionDays, 30);
    assert.equal(config.repository.objectLock, undefined);
    const p = config.plans[0]!;
    assert.equal(p.repository.url, 's3://cairn-test-123456789012-eu-central-1/plans/orders-db/');
    assert.deepEqual(p.timeouts, { heartbeatSeconds: 300, timeoutSeconds: 21600 });
    assert.equal(p.schedule.timeZone, 'UTC');
    assert.equal(rpoSeconds(p), 26 * 3600);
    for (const side of ['host', 'control'] as const)
      assert.deepEqual(referencedParameters(p, side), ['/cairn/test/orders-db/password', '/cairn/test/orders-db/passphrase']);
  });

  test('a resolved plan round-trips through JSON (what Parameter Store holds)', () => {
    const p = parseEnvironmentConfig(env([plan()]), 'test').plans[0]!;
    assert.deepEqual(parsePlan(JSON.parse(JSON.stringify(p)), planParameterName('test', p.id)), p);
    assert.equal(planParameterName('test', 'orders-db'), '/cairn/test/plans/orders-db');
  });

  test('an invalid schedule is named with env, plan and field', () => {
    const error = configError(() => parseEnvironmentConfig(env([plan({ schedule: { expression: 'every day' } })]), 'prod'));
    assert.match(error.message, /^env prod, plan orders-db: schedule\.expression: /);
    assert.equal(error.code, 'Cairn.Config');
  });

  test('a plan without a valid id is named by position', () => {
    const error = configError(() => parseEnvironmentConfig(env([plan(), plan({ id: 'Orders DB' })]), 'prod'));
    assert.match(error.message, /env prod, plan Orders DB: id: /);
    const missing = configError(() => parseEnvironmentConfig(env([{ ...plan(), id: undefined } as unknown as PlanInput]), 'prod'));
    assert.match(missing.message, /env prod, plan #1: id: /);
  });

  test('duplicate plan ids are rejected', () => {
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan(), plan()]), 'dev')).message,
      /plan orders-db: id: plan id orders-db is used twice/,
    );
  });

  test('orchestrated plans need s3:// repositories', () => {
    for (const url of ['/var/backups/repo', 'file:///var/backups', 'http://example.com/x']) {
      assert.match(
        configError(() => parseEnvironmentConfig(env([plan({ repository: { url } })]), 'dev')).message,
        /plan orders-db: repository\.url: .*s3:\/\//,
      );
    }
    const s3 = parseEnvironmentConfig(env([plan({ repository: { url: 's3://my-bucket/cairn/orders' } })]), 'dev').plans[0]!;
    assert.deepEqual(repositoryLocation(s3.repository.url), { scheme: 's3', bucket: 'my-bucket', prefix: 'cairn/orders/' });
  });

  test('a gs:// plan is refused at synth, naming the field and why (no Google credentials for hosts and functions)', () => {
    const error = configError(() =>
      parseEnvironmentConfig(env([plan(), plan({ id: 'to-gcs', repository: { url: 'gs://my-bucket/cairn/orders' } })]), 'prod'),
    );
    assert.equal(error.code, 'Cairn.Config');
    assert.match(error.message, /^env prod, plan to-gcs: repository\.url: a gs:\/\/ repository cannot be orchestrated yet: /);
    assert.match(error.message, /Google credentials/);
    assert.match(error.message, /cairn copy/);
    // What the agent reads back from Parameter Store is parsed as before (a plan written by an older app still reads).
    const stored = parsePlan(
      { ...parseEnvironmentConfig(env([plan()]), 'dev').plans[0]!, repository: { url: 'gs://my-bucket/p/' } },
      'test',
    );
    assert.equal(repositoryLocation(stored.repository.url).scheme, 'gs');
  });

  test("a plan at an S3-compatible endpoint names the hosts' and the control plane's key parameters, each a secret of its side only", () => {
    const url = 's3://backups/cairn/orders?endpoint=https://minio.internal:9000&path-style=true';
    const keys = { credentialsParameter: '/cairn/dev/minio/orders', controlCredentialsParameter: '/cairn/dev/minio/orders-control' };
    const p = parseEnvironmentConfig(env([plan({ repository: { url, ...keys } })]), 'dev').plans[0]!;
    assert.deepEqual(p.repository, { url, ...keys });
    assert.deepEqual(repositoryEndpoint(p.repository), { endpoint: 'https://minio.internal:9000', ...keys });
    assert.deepEqual(repositoryLocation(p.repository.url), { scheme: 's3', bucket: 'backups', prefix: 'cairn/orders/' });
    assert.equal(awsS3Location(p), undefined, 'no AWS S3 location: the stack grants nothing in S3 for it');
    assert.ok(referencedParameters(p, 'host').includes('/cairn/dev/minio/orders'));
    assert.ok(!referencedParameters(p, 'host').includes('/cairn/dev/minio/orders-control'), 'hosts never read the key that deletes');
    assert.ok(referencedParameters(p, 'control').includes('/cairn/dev/minio/orders-control'));
    assert.ok(!referencedParameters(p, 'control').includes('/cairn/dev/minio/orders'));
    // What Parameter Store holds reads back the same.
    assert.deepEqual(parsePlan(JSON.parse(JSON.stringify(p)), 'test').repository, p.repository);
    const aws = parseEnvironmentConfig(env([plan()]), 'dev').plans[0]!;
    assert.deepEqual(awsS3Location(aws), { bucket: 'cairn-dev-123456789012-eu-central-1', prefix: 'plans/orders-db/' });
  });

  test('URL options and credentials that do not make an S3-compatible endpoint are refused at synth, naming the field and why', () => {
    const refused: Array<[PlanInput['repository'], RegExp]> = [
      [
        { url: 's3://backups/cairn/orders?endpoint=https://minio.internal:9000&path-style=true', controlCredentialsParameter: '/cairn/c' },
        /repository\.credentialsParameter: an S3-compatible endpoint needs its own access key.*"accessKeyId".*not delete/,
      ],
      [
        { url: 's3://backups/o?endpoint=https://m:9000', credentialsParameter: '/cairn/k' },
        /repository\.controlCredentialsParameter: an S3-compatible endpoint needs a second access key for the control plane/,
      ],
      [
        { url: 's3://backups/o?endpoint=https://m:9000', credentialsParameter: '/cairn/k', controlCredentialsParameter: '/cairn/k' },
        /repository\.controlCredentialsParameter: must name another parameter than credentialsParameter/,
      ],
      [
        { url: 's3://backups/o', controlCredentialsParameter: '/cairn/c' },
        /repository\.controlCredentialsParameter: is only for an S3-compatible endpoint/,
      ],
      [{ url: 's3://backups/cairn/orders?region=eu-west-1' }, /repository\.url: options after "\?" are accepted only with endpoint=/],
      [
        { url: 's3://backups/o?endpoint=https://m:9000&key-ssm=/x', credentialsParameter: '/cairn/k' },
        /repository\.url: option "key-ssm" is not accepted for a deployed plan/,
      ],
      [
        { url: 's3://backups/o?endpoint=ftp://m:9000', credentialsParameter: '/cairn/k' },
        /endpoint must be an http:\/\/ or https:\/\/ URL/,
      ],
      [
        { url: 's3://backups/o?endpoint=https://m:9000&path-style=yes', credentialsParameter: '/cairn/k' },
        /path-style must be true or false/,
      ],
      [
        { url: 's3://backups/o', credentialsParameter: '/cairn/k' },
        /repository\.credentialsParameter: is only for an S3-compatible endpoint/,
      ],
      [{ url: 's3://backups/o?endpoint=https://m:9000', credentialsParameter: 'AKIA-not-a-name' }, /repository\.credentialsParameter: /],
    ];
    for (const [repository, expected] of refused) {
      const error = configError(() => parseEnvironmentConfig(env([plan({ repository })]), 'dev'));
      assert.equal(error.code, 'Cairn.Config');
      assert.match(error.message, /^env dev, plan orders-db: /);
      assert.match(error.message, expected, JSON.stringify(repository));
    }
  });

  test('a PostgreSQL PITR plan at an S3-compatible endpoint is refused: archive_command has no way to its access key', () => {
    const repository = {
      url: 's3://backups/pg?endpoint=https://minio.internal:9000',
      credentialsParameter: '/cairn/dev/minio/pg',
      controlCredentialsParameter: '/cairn/dev/minio/pg-control',
    };
    const pg = plan({ id: 'pg', engine: 'postgres', engineOptions: {}, pitr: { enabled: true }, repository });
    assert.match(
      configError(() => parseEnvironmentConfig(env([pg]), 'dev')).message,
      /plan pg: pitr\.enabled: a PostgreSQL plan whose repository is an S3-compatible endpoint cannot archive WAL/,
    );
  });

  test('secrets are parameter names, not values', () => {
    const error = configError(() => parseEnvironmentConfig(env([plan({ engineOptions: { passwordParameter: 'hunter2 secret' } })]), 'dev'));
    assert.match(error.message, /plan orders-db: engineOptions\.passwordParameter: .*parameter name/);
    assert.doesNotMatch(error.message, /hunter2/);
  });

  test('targets accept EC2 and on-prem managed instance ids, or a tag selector', () => {
    const config = parseEnvironmentConfig(
      env([
        plan({ targets: { instanceIds: ['i-0abc1234', 'mi-0123456789abcdef0'] } }),
        plan({ id: 'tagged', targets: { tag: { key: 'cairn:plan', value: 'tagged' } } }),
      ]),
      'dev',
    );
    assert.equal(config.plans.length, 2);
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan({ targets: { instanceIds: ['i-x; rm -rf /'] } })]), 'dev')).message,
      /plan orders-db: targets/,
    );
  });

  test('the rpo is a duration and the heartbeat shorter than the timeout', () => {
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan({ rpo: 'a day' })]), 'dev')).message,
      /plan orders-db: rpo: invalid duration/,
    );
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan({ timeouts: { heartbeatSeconds: 600, timeoutSeconds: 300 } })]), 'dev')).message,
      /plan orders-db: timeouts\.heartbeatSeconds: heartbeatSeconds must be less than timeoutSeconds/,
    );
  });

  test('the files engine needs paths; other engines take none', () => {
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan({ engine: 'files', engineOptions: {} })]), 'dev')).message,
      /engineOptions\.paths: the files engine needs/,
    );
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan({ engineOptions: { paths: ['/x'] } })]), 'dev')).message,
      /paths is for the files engine/,
    );
  });

  test('an empty retention policy is refused', () => {
    assert.match(
      configError(() => parseEnvironmentConfig(env([plan({ retention: {} })]), 'dev')).message,
      /plan orders-db: retention: name at least one keep rule/,
    );
  });

  test('environment-level fields are named without a plan', () => {
    const lock = configError(() =>
      parseEnvironmentConfig(env([plan()], { repository: { objectLock: { mode: 'FOREVER' as 'COMPLIANCE', days: 30 } } }), 'prod'),
    );
    assert.match(lock.message, /^env prod: repository\.objectLock\.mode: /);
    const replica = configError(() =>
      parseEnvironmentConfig(env([plan()], { repository: { replica: { region: 'eu-central-1' } } }), 'prod'),
    );
    assert.match(replica.message, /^env prod: repository\.replica\.region: the replica must be in another region/);
    assert.match(configError(() => parseEnvironmentConfig(env([plan()], { account: '12' }), 'prod')).message, /^env prod: account: /);
  });

  test('the replica bucket name defaults from the primary', () => {
    const config = parseEnvironmentConfig(
      env([plan()], { repository: { bucketName: 'acme-backups', replica: { region: 'eu-west-1' } } }),
      'prod',
    );
    assert.deepEqual(config.repository.replica, { region: 'eu-west-1', bucketName: 'acme-backups-replica' });
  });

  test('pitr is off unless enabled, and only postgres and mariadb plans may enable it', () => {
    const off = parseEnvironmentConfig(env([plan()]), 'prod').plans[0]!;
    assert.equal(off.pitr, undefined);
    assert.equal(pitrOf(off), undefined);
    assert.equal(
      pitrOf(parseEnvironmentConfig(env([plan({ engine: 'postgres', pitr: { enabled: false } })]), 'prod').plans[0]!),
      undefined,
    );
    const on = parseEnvironmentConfig(env([plan({ engine: 'postgres', pitr: { enabled: true } })]), 'prod').plans[0]!;
    assert.deepEqual(pitrOf(on), { enabled: true, maxArchiveLagMinutes: 15 });
    for (const engine of ['pgdump', 'mysqldump', 'files', 'etcd'] as const) {
      const error = configError(() =>
        parseEnvironmentConfig(
          env([plan({ engine, ...(engine === 'files' ? { engineOptions: { paths: ['/srv'] } } : {}), pitr: { enabled: true } })]),
          'prod',
        ),
      );
      assert.match(
        error.message,
        new RegExp(`^env prod, plan orders-db: pitr\\.enabled: point-in-time recovery .*postgres or mariadb, not ${engine}`),
      );
    }
  });

  test('pitr fields are checked against the engine and each other, naming the field', () => {
    const fails = (pitr: Record<string, unknown>, engine: 'postgres' | 'mariadb'): string =>
      configError(() => parseEnvironmentConfig(env([plan({ engine, pitr: pitr })]), 'prod')).message;
    assert.match(
      fails({ enabled: true, archiveStream: 'mariadb-main' }, 'postgres'),
      /plan orders-db: pitr\.archiveStream: a postgres plan's stream starts with pg-/,
    );
    assert.match(fails({ enabled: true, archiveStream: 'Main DB' }, 'mariadb'), /plan orders-db: pitr\.archiveStream: a log stream name/);
    assert.match(
      fails({ enabled: true, binlogPushSchedule: 'rate(5 minutes)' }, 'postgres'),
      /pitr\.binlogPushSchedule: binlogPushSchedule is for mariadb plans/,
    );
    assert.match(fails({ enabled: true, binlogPushSchedule: 'every 5 minutes' }, 'mariadb'), /pitr\.binlogPushSchedule: /);
    assert.match(fails({ enabled: true, maxArchiveLagMinutes: 0 }, 'mariadb'), /pitr\.maxArchiveLagMinutes: /);
    assert.match(
      fails({ enabled: true, maxArchiveLagMinutes: 10, binlogPushSchedule: 'rate(10 minutes)' }, 'mariadb'),
      /pitr\.maxArchiveLagMinutes: 10 minutes is not longer than the binlog push interval \(10 minutes\)/,
    );
    assert.match(
      fails({ enabled: true, maxArchiveLagMinutes: 5 }, 'mariadb'),
      /not longer than the binlog push interval \(5 minutes\)/,
      'the default schedule counts too',
    );
    assert.match(fails({ enabled: true, extra: 1 }, 'mariadb'), /plan orders-db: pitr: /);
    const ok = parseEnvironmentConfig(
      env([
        plan({
          engine: 'mariadb',
          pitr: { enabled: true, archiveStream: 'mariadb-main', maxArchiveLagMinutes: 90, binlogPushSchedule: 'rate(1 hour)' },
        }),
      ]),
      'prod',
    ).plans[0]!;
    assert.equal(pitrOf(ok)?.binlogPushSchedule, 'rate(1 hour)');
    const follow = parseEnvironmentConfig(
      env([plan({ engine: 'mariadb', pitr: { enabled: true, binlogPushSchedule: 'follow', maxArchiveLagMinutes: 2 } })]),
      'prod',
    ).plans[0]!;
    assert.equal(pitrOf(follow)?.binlogPushSchedule, 'follow');
    assert.deepEqual(parsePlan(JSON.parse(JSON.stringify(ok)), 'round trip'), ok);
  });

  test("engine options are the engine's own, checked against its schema and named in errors", () => {
    const parse = (p: PlanInput) => parseEnvironmentConfig(env([p]), 'prod').plans[0]!;
    const pg = parse(plan({ engineOptions: { connection: { host: 'db', port: 5432 }, databases: ['app'], jobs: 4 } }));
    assert.deepEqual(engineOptionsOfPlan(pg), { databases: ['app'], jobs: 4, host: 'db', port: 5432 });
    const etcd = parse(
      plan({
        engine: 'etcd',
        engineOptions: {
          endpoints: ['https://10.0.0.1:2379', 'https://10.0.0.2:2379'],
          cacert: '/etc/etcd/ca.pem',
          cert: '/etc/etcd/client.pem',
          key: '/etc/etcd/client-key.pem',
        },
      }),
    );
    assert.deepEqual(engineOptionsOfPlan(etcd).endpoints, ['https://10.0.0.1:2379', 'https://10.0.0.2:2379']);
    assert.equal(parse(plan({ engine: 'mariadb', engineOptions: { parallel: 8, owner: 'mysql' } })).engineOptions.parallel, 8);
    const fails = (p: PlanInput): string => configError(() => parseEnvironmentConfig(env([p]), 'prod')).message;
    assert.match(fails(plan({ engineOptions: { jobs: 0 } })), /plan orders-db: engineOptions\.jobs: /);
    assert.match(
      fails(plan({ engine: 'etcd', engineOptions: { jobs: 2 } })),
      /engineOptions\.jobs: jobs is for the pgdump engine, not etcd/,
    );
    assert.match(
      fails(plan({ engine: 'etcd', engineOptions: { connection: { socket: '/run/etcd.sock' } } })),
      /engineOptions\.connection\.socket: socket is for the mysqldump, pgdump, postgres, mariadb engines, not etcd/,
    );
    assert.match(
      fails(plan({ engineOptions: { host: 'db' } })),
      /engineOptions\.host: a plan gives the host in engineOptions\.connection\.host/,
    );
    assert.match(
      fails(plan({ engineOptions: { bogus: 1 } })),
      /engineOptions\.bogus: bogus is not an option of the pgdump engine \(its options: passwordFile, databases, jobs/,
    );
    assert.match(
      fails(plan({ engine: 'nosql' })),
      /plan orders-db: engine: unknown engine "nosql": one of files, mysqldump, pgdump, etcd, etcd-keys, postgres, mariadb/,
    );
    // Every shipped engine drills now (a logical dump loads into a private server): a pgdump plan may ask for one.
    assert.equal(
      parseEnvironmentConfig(env([plan({ verification: { schedule: { expression: 'rate(7 days)' }, drill: true } })]), 'prod').plans[0]
        ?.verification?.drill,
      true,
    );
  });

  test('wal-push and wal-fetch get the repository with its region and the passphrase file; a KMS plan none', () => {
    const p = parseEnvironmentConfig(env([plan({ engine: 'postgres', pitr: { enabled: true } })]), 'prod').plans[0]!;
    assert.deepEqual(walCairnArgs(p, 'eu-central-1'), [
      '--repo',
      's3://cairn-prod-123456789012-eu-central-1/plans/orders-db/?region=eu-central-1',
      '--password-file',
      '/etc/cairn/orders-db.passphrase',
    ]);
    const kms = { ...p, keySource: { kmsKeyArn: 'arn:aws:kms:eu-central-1:123456789012:key/abc' } };
    assert.deepEqual(walCairnArgs(kms, undefined), ['--repo', 's3://cairn-prod-123456789012-eu-central-1/plans/orders-db/']);
  });

  test('invalid environment names and non-object input are rejected', () => {
    assert.match(configError(() => parseEnvironmentConfig(env([plan()]), 'Prod!')).message, /invalid environment name/);
    assert.match(configError(() => parseEnvironmentConfig('nope', 'dev')).message, /^env dev: /);
  });

  test('fuzz: random mutations of a valid config never throw anything but a CairnError', () => {
    let seed = 42;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const junk = [null, 0, -1, 1e9, '', 'x', '../../etc', [], {}, true, 'cron(* * * * * *)', '$(reboot)'];
    const mutate = (value: unknown, depth: number): unknown => {
      if (rand() < 0.15 || depth > 4) return junk[Math.floor(rand() * junk.length)];
      if (Array.isArray(value)) return value.map((v) => mutate(v, depth + 1));
      if (typeof value === 'object' && value !== null)
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rand() < 0.8 ? v : mutate(v, depth + 1)]));
      return value;
    };
    let rejected = 0;
    for (let i = 0; i < 300; i++) {
      try {
        parseEnvironmentConfig(
          mutate(
            env([
              plan(),
              plan({ id: 'etcd-main', engine: 'etcd' }),
              plan({
                id: 'binlogs',
                engine: 'mariadb',
                pitr: { enabled: true, archiveStream: 'mariadb-main', binlogPushSchedule: 'rate(5 minutes)' },
              }),
            ]),
            0,
          ),
          'fuzz',
        );
      } catch (error) {
        assert.ok(error instanceof CairnError, String(error));
        assert.match(error.message, /^env fuzz/);
        rejected++;
      }
    }
    assert.ok(rejected > 0);
  });
});
