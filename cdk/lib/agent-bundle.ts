import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack, Stage } from 'aws-cdk-lib';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import { Construct } from 'constructs';
import { repoRoot } from './paths.ts';

/**
 * What the hosts are given (docs/single-binary.md, "The SSM document"):
 * - `node`: the CLI as one ES module (~2.5 MB) that the host's Node 22 runs;
 * - `sea`: the single executable (`npm run build:sea`, ~122 MiB, linux-x64 only) that needs no Node.
 * The document downloads the asset on every run (a binlog push every 5 minutes by default), and
 * Graviton hosts cannot run an x64 binary: `node` stays the default.
 */
export type AgentKind = 'node' | 'sea';

/** The file the agent is, per kind: its name in the asset and in the host's install directory. */
export const AGENT_FILE: Record<AgentKind, string> = { node: 'cairn.mjs', sea: 'cairn' };

export interface AgentBundleProps {
  /** Default `node`. */
  kind?: AgentKind;
}

/**
 * The agent CLI, uploaded as a CDK file asset: bundled by esbuild (locally, no
 * Docker) into one ES module that hosts run with their own Node 22, or the single
 * executable built by agent/cli/build-sea.ts. The SHA-256 of the exact file is
 * computed here, because the SSM document checks what it downloaded against it
 * (a CDK asset hash is not a file checksum). When the stack is synthesized with
 * bundling skipped (template tests), a small placeholder stands in and
 * `placeholder` is true.
 */
export class AgentBundle extends Construct {
  readonly asset: s3assets.Asset;
  readonly sha256: string;
  readonly placeholder: boolean;
  readonly kind: AgentKind;

  constructor(scope: Construct, id: string, props: AgentBundleProps = {}) {
    super(scope, id);
    this.kind = props.kind ?? 'node';
    this.placeholder = !Stack.of(this).bundlingRequired;
    const outdir = join(Stage.of(this)?.outdir ?? join(repoRoot, 'cdk.out'), '.cairn-agent');
    const file = this.placeholder ? writePlaceholder(this.kind) : this.kind === 'sea' ? buildSeaAgent() : bundleAgent(outdir);
    this.sha256 = createHash('sha256').update(readFileSync(file)).digest('hex');
    this.asset = new s3assets.Asset(this, 'Asset', { path: file });
  }
}

/**
 * The CLI bundle hosts run is the one `npm run build:cli` makes for the local bin (agent/cli/build.ts,
 * run by path: the CDK app imports nothing from the agent but core), so its options (minified, Node's
 * built-ins loaded on first use) live in one place. It builds into `outdir`, replacing what is there.
 */
export function bundleAgent(outdir: string): string {
  const r = spawnSync(process.execPath, [join(repoRoot, 'agent', 'cli', 'build.ts'), '--outdir', outdir], {
    cwd: repoRoot,
    encoding: 'utf8',
  });
  if (r.status !== 0)
    throw new Error(`the agent bundle could not be built (npm run build:cli): ${r.error?.message ?? ''}${r.stderr ?? ''}`.trim());
  return join(outdir, AGENT_FILE.node);
}

/**
 * The single executable, built by its own script (agent/cli/build-sea.ts, named by path: the CDK app
 * imports nothing from the agent but core) into its cache, node_modules/.cache/cairn-sea/, which
 * skips the build while the bundle is unchanged.
 */
export function buildSeaAgent(): string {
  const r = spawnSync(process.execPath, [join(repoRoot, 'agent', 'cli', 'build-sea.ts')], { cwd: repoRoot, encoding: 'utf8' });
  const binary = /^(?:built|up to date): (\S+)$/m.exec(r.stdout ?? '')?.[1];
  if (r.status !== 0 || binary === undefined)
    throw new Error(
      `the single-executable agent could not be built (npm run build:sea): ${r.error?.message ?? ''}${r.stderr ?? ''}${r.stdout ?? ''}`.trim(),
    );
  return binary;
}

function writePlaceholder(kind: AgentKind): string {
  const dir = join(tmpdir(), `cairn-agent-placeholder-${kind}`);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, AGENT_FILE[kind]);
  writeFileSync(
    file,
    kind === 'sea'
      ? "#!/bin/sh\necho 'placeholder agent: synthesized with bundling skipped' >&2\nexit 1\n"
      : "throw new Error('placeholder agent bundle: synthesized with bundling skipped');\n",
  );
  return file;
}
