import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { describeTree, makeRandomTree } from '../helpers/tree.ts';
import { startSystem, type System } from './harness.ts';

/**
 * A plan whose repository is a bucket at an S3-compatible endpoint (issue 17, point 4), end to
 * end: the synthesized state machines under aws-local-stepfunctions, the real handlers, the real
 * document script and agent bundle, s3rver as the endpoint (behind the harness's stand-in for
 * conditional writes). The endpoint's access key is in the plan's SecureString parameter (the
 * Parameter Store stand-in). The AWS credential chain of the functions and of the host is given a
 * key s3rver refuses, so every request that reaches the endpoint was signed with the parameter's
 * key, or it fails.
 *
 * The plan names two keys: the hosts' and the control plane's. A STAND-IN endpoint policy (the key
 * gate below, in front of the harness's endpoint) plays what the endpoint's operator configures:
 * it knows both access key ids, answers 403 AccessDenied to any delete signed with the hosts' key,
 * and records which key signed each request. s3rver itself knows one key (S3RVER); both test keys
 * share its secret, and the gate puts S3RVER in place of their access key id, which SigV4 does not
 * sign, so s3rver still checks every signature.
 */
const PLAN = 'minio-plan';
const PASSPHRASE = 'e2e endpoint passphrase, long enough';
const PASSPHRASE_PARAMETER = `/cairn/e2e/${PLAN}/passphrase`;
const KEY_PARAMETER = `/cairn/e2e/${PLAN}/endpoint-key`;
const CONTROL_KEY_PARAMETER = `/cairn/e2e/${PLAN}/endpoint-control-key`;
const HOST_KEY_ID = 'CAIRNHOSTKEY';
const CONTROL_KEY_ID = 'CAIRNCONTROLKEY';
/** The hosts' key (the gate lets it read, list and create, never delete) and the control plane's; both sign with s3rver's secret. */
const ENDPOINT_KEY = JSON.stringify({ accessKeyId: HOST_KEY_ID, secretAccessKey: 'S3RVER' });
const CONTROL_KEY = JSON.stringify({ accessKeyId: CONTROL_KEY_ID, secretAccessKey: 'S3RVER' });

/** DeleteObject (DELETE without ?uploadId: that is AbortMultipartUpload, which a host may do) or DeleteObjects (POST ?delete). */
const isDelete = (method: string, url: string): boolean =>
  (method === 'DELETE' && !/[?&]uploadId=/.test(url)) || (method === 'POST' && /[?&]delete(=|&|$)/.test(url));

interface GateEntry {
  keyId: string;
  method: string;
  url: string;
  refused: boolean;
}

/** STAND-IN for the endpoint's policy on the two keys (see the comment above); `target` is set once the harness names its endpoint. */
async function startKeyGate(): Promise<{ endpoint: string; log: GateEntry[]; setTarget(url: string): void; stop(): Promise<void> }> {
  const log: GateEntry[] = [];
  let target: URL | undefined;
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const auth = req.headers.authorization ?? '';
      const keyId = /Credential=([^/]+)\//.exec(auth)?.[1] ?? '(unsigned)';
      const url = req.url ?? '/';
      const refused = keyId === HOST_KEY_ID && isDelete(req.method ?? '', url);
      log.push({ keyId, method: req.method ?? '', url, refused });
      if (refused) {
        res.writeHead(403, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>');
        return;
      }
      const headers = { ...req.headers };
      if (keyId === HOST_KEY_ID || keyId === CONTROL_KEY_ID)
        headers.authorization = auth.replace(`Credential=${keyId}/`, 'Credential=S3RVER/');
      const out = request({ host: target!.hostname, port: target!.port, method: req.method, path: url, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      out.once('error', () => res.destroy());
      out.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    log,
    setTarget: (url) => {
      target = new URL(url);
    },
    stop: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
/** What the instance role and the Lambda role would sign with: not the endpoint's. */
const ROLE_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'AKIAE2EINSTANCEROLE', AWS_SECRET_ACCESS_KEY: 'instance-role-secret' };

describe('a plan at an S3-compatible endpoint end to end', { timeout: 600_000 }, () => {
  let system: System;
  let work: string;
  let data: string;
  let repoUrl: string;
  let gate: Awaited<ReturnType<typeof startKeyGate>>;
  // The operator's own `cairn`, with the endpoint's key in its environment, to look at the repository.
  const cliEnv = (): Record<string, string> => ({
    ...(system.env as Record<string, string>),
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    CAIRN_PASSWORD: PASSPHRASE,
  });
  const snapshotIds = async (): Promise<string[]> => {
    const r = await runCli(['snapshots', '--json', '--repo', repoUrl], cliEnv());
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; snapshots?: Array<{ id: string }> })
      .find((l) => l.type === 'snapshots');
    return (line?.snapshots ?? []).map((s) => s.id).sort();
  };
  const asHost = { hostEnv: ROLE_CREDENTIALS };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-e2e-endpoint-'));
    data = join(work, 'data');
    await makeRandomTree(data, 23, { files: 10, maxFileSize: 80_000 });
    gate = await startKeyGate();
    system = await startSystem(({ endpoint, bucket }) => {
      gate.setTarget(endpoint);
      repoUrl = `s3://${bucket}/minio/${PLAN}/?endpoint=${gate.endpoint}&path-style=true&region=us-east-1`;
      return [
        {
          id: PLAN,
          targets: { instanceIds: ['i-0e2e0000000000001'] },
          engine: 'files',
          engineOptions: { paths: [data] },
          schedule: { expression: 'rate(1 day)' },
          retention: { keepLast: 1 },
          keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
          rpo: '26h',
          timeouts: { heartbeatSeconds: 30, timeoutSeconds: 900 },
          repository: { url: repoUrl, credentialsParameter: KEY_PARAMETER, controlCredentialsParameter: CONTROL_KEY_PARAMETER },
        },
      ];
    });
    system.ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    system.ssm.parameters.set(KEY_PARAMETER, ENDPOINT_KEY);
    system.ssm.parameters.set(CONTROL_KEY_PARAMETER, CONTROL_KEY);
    // The in-process functions' role: refused by the endpoint.
    Object.assign(process.env, ROLE_CREDENTIALS);
  });
  after(async () => {
    try {
      await system.stop();
    } finally {
      await gate?.stop();
      await rm(work, { recursive: true, force: true });
    }
  });

  it('the plan in Parameter Store names the endpoint and the key parameter, never the key', () => {
    const stored = system.ssm.parameters.get(`/cairn/e2e/plans/${PLAN}`) ?? '';
    assert.deepEqual((JSON.parse(stored) as { repository: unknown }).repository, {
      url: repoUrl,
      credentialsParameter: KEY_PARAMETER,
      controlCredentialsParameter: CONTROL_KEY_PARAMETER,
    });
    assert.doesNotMatch(stored, /S3RVER|CAIRNHOSTKEY|CAIRNCONTROLKEY/);
  });

  it('scheduled backups create the repository and succeed, retention keeps the policy, a restore is byte-identical', async () => {
    const first = (await system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-20T02:00:00Z' }, asHost)) as {
      agent: { snapshotId: string };
    };
    assert.match(first.agent.snapshotId, /^[0-9a-f]{64}$/);
    const second = (await system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-21T02:00:00Z' }, asHost)) as {
      agent: { snapshotId: string };
    };
    // The Backup machine's own retention (keepLast 1) has already run after each backup.
    assert.deepEqual(await snapshotIds(), [second.agent.snapshotId]);
    const third = (await system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-22T02:00:00Z' }, asHost)) as {
      agent: { snapshotId: string };
    };
    const retention = (await system.run('Retention', { planId: PLAN })) as { retention: { kept: Array<{ id: string }> } };
    assert.deepEqual(
      retention.retention.kept.map((k) => k.id),
      [third.agent.snapshotId],
    );
    assert.deepEqual(await snapshotIds(), [third.agent.snapshotId]);

    const target = join(work, 'restored');
    const restored = (await system.run('Restore', { planId: PLAN, snapshot: 'latest', targetPath: target }, asHost)) as {
      agent: { snapshotId: string };
      recorded: { outcome: string };
    };
    assert.equal(restored.agent.snapshotId, third.agent.snapshotId);
    assert.equal(restored.recorded.outcome, 'success');
    assert.deepEqual(await describeTree(target), await describeTree(data));
    const check = await runCli(['check', '--repo', repoUrl], cliEnv());
    assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);

    // Which key signed what (the gate's record): the hosts wrote with theirs and never asked to delete;
    // every delete (retention, garbage collection) was the control plane's; the roles' key reached nothing.
    const by = (keyId: string): GateEntry[] => gate.log.filter((e) => e.keyId === keyId);
    assert.ok(
      by(HOST_KEY_ID).some((e) => e.method === 'PUT'),
      'the hosts wrote with their key',
    );
    assert.deepEqual(
      by(HOST_KEY_ID).filter((e) => e.refused || isDelete(e.method, e.url)),
      [],
      'no host ever needed to delete',
    );
    const controlDeletes = by(CONTROL_KEY_ID).filter((e) => isDelete(e.method, e.url));
    assert.ok(controlDeletes.length > 0, 'retention deleted with the control key');
    assert.ok(by(CONTROL_KEY_ID).every((e) => !e.refused));
    assert.deepEqual(
      gate.log.filter((e) => e.keyId === ROLE_CREDENTIALS.AWS_ACCESS_KEY_ID),
      [],
      "nothing was signed with the roles' key",
    );
    // Who read which key (the recorded SDK calls): the agent only the hosts', the functions only the control plane's;
    // with the gate's record above, every request the agent made was signed with the hosts' key.
    const readers = (parameter: string): string[] => [
      ...new Set(system.awsCalls().flatMap((c) => (c.command === 'GetParameter' && c.parameter === parameter ? [c.principal] : []))),
    ];
    assert.deepEqual(readers(KEY_PARAMETER), ['host'], "only the agent read the hosts' key");
    const controlReaders = readers(CONTROL_KEY_PARAMETER);
    assert.ok(controlReaders.length > 0 && !controlReaders.includes('host'), `the control key's readers: ${controlReaders.join(', ')}`);
    for (const fn of ['createRepository', 'planBackup', 'applyRetention'])
      assert.ok(controlReaders.includes(fn), `${fn} read the control key (${controlReaders.join(', ')})`);
  });

  it('a host holding only its own key cannot delete at the endpoint (the stand-in endpoint policy refuses it)', async () => {
    const { S3Client, DeleteObjectCommand } = await import('@aws-sdk/client-s3');
    const client = new S3Client({
      endpoint: gate.endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: { accessKeyId: HOST_KEY_ID, secretAccessKey: 'S3RVER' },
    });
    try {
      const bucket = new URL(repoUrl.replace(/^s3:/, 'http:')).hostname;
      await assert.rejects(
        client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `minio/${PLAN}/config` })),
        (error: Error) => error.name === 'AccessDenied',
      );
    } finally {
      client.destroy();
    }
    assert.ok(gate.log.some((e) => e.keyId === HOST_KEY_ID && e.refused));
  });

  it('a wrong key in either parameter fails the run with a message naming that parameter', async () => {
    system.ssm.parameters.set(KEY_PARAMETER, JSON.stringify({ accessKeyId: 'AKIAWRONGENDPOINTKEY', secretAccessKey: 'wrong' }));
    try {
      await assert.rejects(system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-23T02:00:00Z' }, asHost), (error: unknown) => {
        assert.ok(error instanceof Error);
        const text = `${error.name} ${error.message} ${JSON.stringify((error as { cause?: unknown }).cause ?? '')}`;
        assert.match(text, /Cairn\.Config/);
        assert.match(text, new RegExp(`access key in parameter ${KEY_PARAMETER}`));
        assert.doesNotMatch(text, /"wrong"|secretAccessKey":"wrong/);
        return true;
      });
      // A parameter that does not hold the documented shape is named too, at the first state that opens the repository.
      system.ssm.parameters.set(KEY_PARAMETER, 'not json');
      await assert.rejects(
        system.run('Restore', { planId: PLAN, snapshot: 'latest', targetPath: join(work, 'r2') }, asHost),
        new RegExp(`parameter ${KEY_PARAMETER} does not hold JSON`),
      );
    } finally {
      system.ssm.parameters.set(KEY_PARAMETER, ENDPOINT_KEY);
    }
    // The functions sign with the control plane's key: a broken one is named by its own parameter, not the hosts'.
    system.ssm.parameters.set(CONTROL_KEY_PARAMETER, 'not json');
    try {
      await assert.rejects(
        system.run('Backup', { planId: PLAN, scheduledTime: '2026-11-24T02:00:00Z' }, asHost),
        new RegExp(`parameter ${CONTROL_KEY_PARAMETER} does not hold JSON`),
      );
    } finally {
      system.ssm.parameters.set(CONTROL_KEY_PARAMETER, CONTROL_KEY);
    }
  });
});
