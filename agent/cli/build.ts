/**
 * `npm run build:cli [-- --outdir DIR]`: the CLI as one pre-compiled ES module, which the bin
 * (bin.js) runs instead of the TypeScript sources while they are unchanged. Node strips types
 * from every .ts file it loads and resolves ~200 modules; the bundle is one file, cached
 * compiled by Node's compile cache, so `cairn --version` starts in a fraction of the time
 * (issue 21; `npm run bench` prints both). Local and offline: esbuild, no download.
 *
 * Hosts run this same build: the CDK's agent bundle (cdk/lib/agent-bundle.ts) runs this script
 * with --outdir, so the CLI run here is the one hosts run. Beside it, sources.json lists every
 * repository file the bundle was built from with its size and mtime, and package-lock.json and
 * node_modules/.package-lock.json for the dependencies: the bin runs the sources as soon as one
 * of them differs.
 */
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type Plugin } from 'esbuild';
import { isBuiltin } from 'node:module';
import { BUILT_DIR, BUILT_ENTRY, BUILT_SOURCES } from './built-cli.js';

/**
 * Node's built-in modules, loaded when the code that uses them first runs instead of when the
 * bundle starts. An ES module bundle hoists every `import … from 'node:http'` to its top, and
 * Node builds an ES module facade for each built-in it names, reading every export: `node:http`'s
 * lazy getters then load undici (~60 ms), and ~30 facades cost ~110 ms of `cairn --version`.
 * Here each built-in is a CommonJS module of the bundle (`require`, which the banner provides),
 * initialised with the first module that imports it: commands load their modules on demand
 * (command-table.ts), so a command loads only the built-ins it uses.
 */
const lazyBuiltins: Plugin = {
  name: 'lazy-builtins',
  setup(b) {
    b.onResolve({ filter: /^(node:)?[a-z_/]+$/ }, (args) =>
      args.namespace === 'lazy-builtin' || !isBuiltin(args.path) ? undefined : { path: args.path, namespace: 'lazy-builtin' },
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path.startsWith('node:') ? args.path : `node:${args.path}`)});`,
      loader: 'js',
    }));
  },
};

const root = fileURLToPath(new URL('../../', import.meta.url));
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const outdir = resolve(values.outdir ?? join(root, BUILT_DIR));

// Built beside its final place and renamed into it, so a cairn starting meanwhile sees the old
// build or none (and runs the sources), never half of the new one.
mkdirSync(dirname(outdir), { recursive: true });
const staging = mkdtempSync(`${outdir.replace(/\/$/, '')}.building-`);
try {
  const result = await build({
    absWorkingDir: root,
    entryPoints: [join(root, 'agent', 'cli', 'cairn.js')],
    outfile: join(staging, BUILT_ENTRY),
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    minify: true,
    legalComments: 'none',
    logLevel: 'error',
    metafile: true,
    plugins: [lazyBuiltins],
    // CommonJS dependencies call require() for Node built-ins.
    banner: { js: "import { createRequire as __cairnRequire } from 'node:module'; const require = __cairnRequire(import.meta.url);" },
  });
  // The repository's own files; the dependencies are covered by the lock files (npm ci rewrites node_modules/.package-lock.json).
  const inputs = Object.keys(result.metafile.inputs).filter(
    (path) => !path.startsWith('../') && !path.includes('node_modules/') && !path.startsWith('lazy-builtin:'),
  );
  const locks = ['package-lock.json', 'node_modules/.package-lock.json'].filter((path) => exists(join(root, path)));
  const files = [...inputs, ...locks].map((path) => {
    const s = statSync(join(root, path));
    return [path, s.size, s.mtimeMs];
  });
  writeFileSync(join(staging, BUILT_SOURCES), `${JSON.stringify({ files })}\n`);
  chmodSync(staging, 0o755); // mkdtemp's 0700 would leave other users running the sources
  rmSync(outdir, { recursive: true, force: true });
  renameSync(staging, outdir);
  process.stdout.write(`built ${join(outdir, BUILT_ENTRY)} from ${inputs.length} source files\n`);
} catch (error) {
  rmSync(staging, { recursive: true, force: true });
  throw error;
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}
