/**
 * The S3 run (issue 21): Cairn and restic each back the bench's dataset up into a bucket that
 * s3rver serves, then restore it, each restore compared byte for byte with the data.
 *
 * Both go through HTTPS with a certificate made for the run: restic's S3 client (minio-go) signs
 * plain-HTTP uploads as aws-chunked bodies, which s3rver stores verbatim (restic then cannot
 * read its own config back); over TLS it sends plain bodies. Cairn trusts the certificate through
 * NODE_EXTRA_CA_CERTS, restic through --cacert.
 *
 * s3rver is a Node process on the same cores, so each figure is the tool and the server
 * together; the ratio between the tools, in the same minutes, is what the aims speak of.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { s3rverEnv, startS3rver } from '../helpers/s3rver.ts';
import { compareTrees, ensureCommand, settle } from './measure.ts';
import { Cairn, Restic, type Logs, type RepoTool } from './tools.ts';

const MB = 1e6;

export interface S3Measurement {
  tool: string;
  scenario: 'first backup' | 'restore';
  seconds: number;
  peakRssMiB: number | undefined;
  cpuSeconds: number | undefined;
}

export interface S3Result {
  dataBytes: number;
  measurements: S3Measurement[];
}

/** Runs the section in `work` (removed after); a restore that differs is pushed to `failures`. Undefined when openssl is missing. */
export async function s3Bench(options: {
  data: string;
  dataBytes: number;
  work: string;
  logs: Logs;
  restic: boolean;
  failures: string[];
}): Promise<S3Result | undefined> {
  if (!ensureCommand('openssl', 'openssl')) {
    console.log('\nS3 section skipped: openssl is missing (it makes the certificate s3rver serves)');
    return undefined;
  }
  const { work, logs } = options;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(logs.dir, { recursive: true });
  try {
    const tls = certificate(work);
    const server = await startS3rver({ tls, bucket: 'cairn-bench' });
    try {
      const credentials = s3rverEnv();
      const tools: RepoTool[] = [new Cairn(server.url('cairn'), logs, { ...credentials, NODE_EXTRA_CA_CERTS: tls.cert })];
      if (options.restic)
        tools.push(
          new Restic(`s3:${server.endpoint}/${server.bucket}/restic`, join(work, 'restic-cache'), logs, {
            env: credentials,
            args: ['--cacert', tls.cert],
          }),
        );
      const measurements: S3Measurement[] = [];
      const record = (m: S3Measurement): void => {
        measurements.push(m);
        console.log(
          `  ${m.scenario.padEnd(14)} ${m.tool.padEnd(7)} ${m.seconds.toFixed(2).padStart(7)} s  ${(options.dataBytes / MB / m.seconds).toFixed(0).padStart(4)} MB/s  peak ${m.peakRssMiB?.toFixed(0) ?? '?'} MiB`,
        );
      };
      console.log(`\nS3 (s3rver over HTTPS on this machine; the server shares the cores), ${(options.dataBytes / MB).toFixed(0)} MB:`);
      for (const tool of tools) {
        await tool.init();
        settle(options.data);
        const t = await tool.backup(options.data);
        record({ tool: tool.name, scenario: 'first backup', seconds: t.seconds, peakRssMiB: t.peakRssMiB, cpuSeconds: t.cpuSeconds });
      }
      for (const tool of tools) {
        const target = join(work, `restore-${tool.name}`);
        settle();
        const t = await tool.restore(target);
        record({ tool: tool.name, scenario: 'restore', seconds: t.seconds, peakRssMiB: t.peakRssMiB, cpuSeconds: t.cpuSeconds });
        const differences = compareTrees(options.data, tool.restoredRoot(target, options.data));
        if (differences)
          options.failures.push(`${tool.name} restore from S3 differs from the data:\n${differences.split('\n').slice(0, 20).join('\n')}`);
        else console.log(`  ${tool.name} restore from S3 is byte-identical to the data`);
        rmSync(target, { recursive: true, force: true });
      }
      return { dataBytes: options.dataBytes, measurements };
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The ratios the aims speak of (restic's seconds over Cairn's: > 1 means Cairn is faster). */
export function formatS3(result: S3Result): string {
  const find = (tool: string, scenario: S3Measurement['scenario']): S3Measurement | undefined =>
    result.measurements.find((m) => m.tool === tool && m.scenario === scenario);
  const lines: string[] = [];
  for (const scenario of ['first backup', 'restore'] as const) {
    const cairn = find('cairn', scenario);
    const restic = find('restic', scenario);
    if (cairn && restic)
      lines.push(
        `  S3 ${scenario}: cairn ${(restic.seconds / cairn.seconds).toFixed(2)}× restic's throughput` +
          ` (aim ≥ 1.5×); peak RSS ${cairn.peakRssMiB?.toFixed(0) ?? '?'} against ${restic.peakRssMiB?.toFixed(0) ?? '?'} MiB`,
      );
  }
  return lines.join('\n');
}

/** A self-signed certificate for 127.0.0.1, made for this run (PEM files in `dir`). */
function certificate(dir: string): { key: string; cert: string } {
  mkdirSync(dir, { recursive: true });
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'];
  const made = spawnSync(
    'openssl',
    [...args, '-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
    {
      encoding: 'utf8',
    },
  );
  if (made.status !== 0) throw new Error(`openssl could not make the S3 section's certificate: ${made.stderr}`);
  return { key, cert };
}
