import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack, Stage } from 'aws-cdk-lib';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import { buildSync } from 'esbuild';
import { Construct } from 'constructs';
import { repoRoot } from './paths.ts';

/**
 * The agent CLI bundled by esbuild (locally, no Docker) into one ES module,
 * uploaded as a CDK file asset. Hosts run it with their own Node 22. The
 * SHA-256 of the exact file is computed here, because the SSM document checks
 * what it downloaded against it (a CDK asset hash is not a file checksum).
 * When the stack is synthesized with bundling skipped (template tests), a
 * small placeholder stands in and `placeholder` is true.
 */
export class AgentBundle extends Construct {
  readonly asset: s3assets.Asset;
  readonly sha256: string;
  readonly placeholder: boolean;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.placeholder = !Stack.of(this).bundlingRequired;
    const file = this.placeholder
      ? writePlaceholder()
      : bundleAgent(join(Stage.of(this)?.outdir ?? join(repoRoot, 'cdk.out'), '.cairn-agent'));
    this.sha256 = createHash('sha256').update(readFileSync(file)).digest('hex');
    this.asset = new s3assets.Asset(this, 'Asset', { path: file });
  }
}

export function bundleAgent(outdir: string): string {
  mkdirSync(outdir, { recursive: true });
  const outfile = join(outdir, 'cairn.mjs');
  buildSync({
    entryPoints: [join(repoRoot, 'agent', 'cli', 'cairn.js')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    minify: true,
    legalComments: 'none',
    logLevel: 'error',
    // CommonJS dependencies call require() for Node built-ins.
    banner: { js: "import { createRequire as __cairnRequire } from 'node:module'; const require = __cairnRequire(import.meta.url);" },
  });
  return outfile;
}

function writePlaceholder(): string {
  const dir = join(tmpdir(), 'cairn-agent-placeholder');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'cairn.mjs');
  writeFileSync(file, "throw new Error('placeholder agent bundle: synthesized with bundling skipped');\n");
  return file;
}
