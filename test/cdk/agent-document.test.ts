import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentDocumentScript } from '../../cdk/lib/agent-command-document.ts';
import { pathWithoutNode } from '../helpers/path-without-node.ts';

/**
 * Runs the real document script the way SSM does (parameters as SSM_* environment
 * variables), with stand-ins on PATH: a `node` that records its arguments and
 * environment and exits as told, and an `aws` that records what it was asked.
 * With kind `sea` the downloaded agent is itself the stand-in (a single executable
 * runs on its own), and PATH has no node at all.
 */
function setup(
  options: { bundle?: string; nodeExit?: number; nodeReports?: boolean; noAws?: boolean; kind?: 'node' | 'sea'; machine?: string } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-doc-'));
  const bin = join(dir, 'bin');
  const download = join(dir, 'download');
  spawnSync('mkdir', ['-p', bin, download]);
  const sea = options.kind === 'sea';
  const object = sea ? 'abc' : 'abc.mjs';
  // Stand-in agent (node running the bundle, or the single executable): answers the version check,
  // records a real run, reports if told to.
  const standIn = `#!/bin/bash
if [ "$1" = "-e" ]; then exit 0; fi
printf '%s\\n' "$@" > "${dir}/node-args"
printf '%s' "$CAIRN_TASK_TOKEN" > "${dir}/node-token"
${options.nodeReports ? 'echo reported > "$CAIRN_REPORT_FILE"' : ''}
exit ${options.nodeExit ?? 0}
`;
  const bundleText = options.bundle ?? (sea ? standIn : 'console.log("the agent")\n');
  writeFileSync(join(download, object), bundleText);
  const sha = createHash('sha256').update(bundleText).digest('hex');
  if (!sea) writeFileSync(join(bin, 'node'), standIn);
  if (options.machine) writeFileSync(join(bin, 'uname'), `#!/bin/bash\necho ${options.machine}\n`);
  // Stand-in aws: records its arguments, what it read from stdin, and every process's command line
  // at that moment (where a token on argv would show to any user of the host).
  if (!options.noAws)
    writeFileSync(
      join(bin, 'aws'),
      `#!/bin/bash\nprintf '%s\\n' "$@" > "${dir}/aws-args"\ncat > "${dir}/aws-stdin"\ncat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' > "${dir}/cmdlines"\n`,
    );
  for (const f of ['node', 'aws', 'uname']) if (existsSync(join(bin, f))) chmodSync(join(bin, f), 0o755);
  const path = sea ? `${bin}:${pathWithoutNode(dir)}` : `${bin}:/usr/bin:/bin`;
  const script = join(dir, 'script.sh');
  writeFileSync(script, agentDocumentScript());
  const run = (params: Record<string, string>, shaOverride?: string) =>
    spawnSync('bash', [script], {
      encoding: 'utf8',
      env: {
        PATH: path,
        TMPDIR: dir,
        CAIRN_HOME: join(dir, 'opt'),
        CAIRN_LINK: join(dir, 'cairn-link'),
        CAIRN_AGENT_SHA256: shaOverride ?? sha,
        CAIRN_AGENT_DOWNLOAD: download,
        CAIRN_AGENT_OBJECT: object,
        ...(options.kind ? { CAIRN_AGENT_KIND: options.kind } : {}),
        ...Object.fromEntries(Object.entries(params).map(([k, v]) => [`SSM_${k}`, v])),
      },
    });
  const read = (name: string): string | undefined => (existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8') : undefined);
  return { dir, sha, path, run, read };
}

const token = 'AAAAKgAAAAIAAAAAAAAAAQ+token/with=base64';

describe('SSM document script', () => {
  test('installs the checked bundle and runs `cairn agent <operation>` with the token in the environment', () => {
    const s = setup({ nodeReports: true });
    const r = s.run({ operation: 'backup', planId: 'orders-db', taskToken: token, request: 'eyJ4IjoxfQ' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(s.read('node-args')!.trim().split('\n'), [
      join(s.dir, 'opt', 'versions', s.sha, 'cairn.mjs'),
      '--json',
      'agent',
      'backup',
      '--plan-id',
      'orders-db',
      '--request=eyJ4IjoxfQ',
    ]);
    assert.equal(s.read('node-token'), token);
    assert.equal(s.read('aws-args'), undefined, 'nothing to report: the agent did');
    assert.equal(readlinkSync(join(s.dir, 'cairn-link')), join(s.dir, 'opt', 'bin', 'cairn'));
    assert.equal(readlinkSync(join(s.dir, 'opt', 'current')), join(s.dir, 'opt', 'versions', s.sha));
  });

  test('a request that starts with "-" (base64url may) stays the value of --request, never an option of its own', () => {
    const s = setup({ nodeReports: true });
    const r = s.run({ operation: 'backup', planId: 'orders-db', taskToken: token, request: '-V' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(s.read('node-args')!.trim().split('\n').slice(1), [
      '--json',
      'agent',
      'backup',
      '--plan-id',
      'orders-db',
      '--request=-V',
    ]);
  });

  test('an agent that exits without reporting makes the script send Cairn.AgentCrashed with the exit code', () => {
    const s = setup({ nodeExit: 3 });
    const r = s.run({ operation: 'verify', planId: 'orders-db', taskToken: token, request: '' });
    assert.equal(r.status, 3);
    // The task token reaches the AWS CLI through stdin, never its argv.
    assert.deepEqual(s.read('aws-args')!.trim().split('\n'), [
      'stepfunctions',
      'send-task-failure',
      '--cli-input-json',
      'file:///dev/stdin',
    ]);
    const input = JSON.parse(s.read('aws-stdin')!) as { taskToken: string; error: string; cause: string };
    assert.equal(input.taskToken, token);
    assert.equal(input.error, 'Cairn.AgentCrashed');
    assert.match(input.cause, /exited with code 3 before reporting/);
    assert.ok(!s.read('cmdlines')!.includes(token), 'no process had the token on its command line');
    assert.ok(!s.read('node-args')!.includes('--request'), 'an empty request is not passed');
  });

  test("a scheduled archive (no task token, no request) ends with the agent's own exit code and reports nothing", () => {
    for (const exit of [0, 16]) {
      const s = setup({ nodeExit: exit });
      const r = s.run({ operation: 'archive', planId: 'orders-db', taskToken: '', request: '' });
      assert.equal(r.status, exit, r.stderr);
      assert.deepEqual(s.read('node-args')!.trim().split('\n').slice(1), ['--json', 'agent', 'archive', '--plan-id', 'orders-db']);
      assert.equal(s.read('aws-args'), undefined, 'no one waits on a token: nothing is sent');
      assert.doesNotMatch(r.stderr, /AgentCrashed/);
    }
  });

  test('a bundle whose SHA-256 does not match is not installed nor run', () => {
    const s = setup({ nodeReports: true });
    const r = s.run({ operation: 'backup', planId: 'orders-db', taskToken: token, request: '' }, 'f'.repeat(64));
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /checksum mismatch/);
    assert.equal(s.read('node-args'), undefined);
    assert.equal(existsSync(join(s.dir, 'opt', 'versions', 'f'.repeat(64), 'cairn.mjs')), false);
    assert.equal((JSON.parse(s.read('aws-stdin')!) as { error: string }).error, 'Cairn.AgentCrashed');
  });

  test('parameters that could inject into the shell are refused before anything runs', () => {
    for (const params of [
      { operation: 'backup; reboot', planId: 'orders-db', taskToken: token, request: '' },
      { operation: 'backup', planId: 'x$(reboot)', taskToken: token, request: '' },
      { operation: 'backup', planId: 'orders-db', taskToken: token, request: '`reboot`' },
      { operation: 'backup', planId: 'orders-db', taskToken: 'a b', request: '' },
    ]) {
      const s = setup({ nodeReports: true });
      const r = s.run(params);
      assert.equal(r.status, 2, JSON.stringify(params));
      assert.equal(s.read('node-args'), undefined);
    }
  });

  test('install places the agent and stops there; without the AWS CLI a crash is left to the heartbeat timeout', () => {
    const s = setup({ noAws: true });
    const r = s.run({ operation: 'install', planId: 'orders-db', taskToken: '', request: '' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /installed/);
    assert.equal(s.read('node-args'), undefined);
    assert.ok(existsSync(join(s.dir, 'opt', 'versions', s.sha, 'cairn.mjs')));
    const crash = s.run({ operation: 'backup', planId: 'orders-db', taskToken: token, request: '' });
    assert.equal(crash.status, 1);
    assert.match(crash.stderr, /no AWS CLI on this host to report Cairn\.AgentCrashed; the execution's heartbeat timeout will end it/);
  });

  test('a single-executable agent is installed as versions/<sha>/cairn and run on its own, on a host without node', () => {
    const s = setup({ kind: 'sea', nodeReports: true });
    assert.equal(spawnSync('bash', ['-c', 'command -v node'], { env: { PATH: s.path } }).status, 1, 'no node on this PATH');
    const r = s.run({ operation: 'backup', planId: 'orders-db', taskToken: token, request: '' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(s.read('node-args')!.trim().split('\n'), ['--json', 'agent', 'backup', '--plan-id', 'orders-db']);
    assert.equal(s.read('node-token'), token);
    const installed = join(s.dir, 'opt', 'versions', s.sha, 'cairn');
    assert.equal(createHash('sha256').update(readFileSync(installed)).digest('hex'), s.sha);
    assert.equal(existsSync(join(s.dir, 'opt', 'versions', s.sha, 'cairn.mjs')), false);
    // The stable link runs the binary directly: what PostgreSQL's archive_command calls.
    const viaLink = spawnSync(join(s.dir, 'cairn-link'), ['wal-push', 'x'], { encoding: 'utf8', env: { PATH: s.path } });
    assert.equal(viaLink.status, 0, viaLink.stderr);
    assert.deepEqual(s.read('node-args')!.trim().split('\n'), ['wal-push', 'x']);
  });

  test('a single-executable agent is not installed on a host that is not x86_64, and the run reports why', () => {
    const s = setup({ kind: 'sea', machine: 'aarch64' });
    const r = s.run({ operation: 'backup', planId: 'orders-db', taskToken: token, request: '' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /linux-x64 single executable and this host is aarch64: deploy the agent for Node/);
    assert.equal(existsSync(join(s.dir, 'opt', 'versions')), false, 'nothing installed');
    assert.equal(s.read('node-args'), undefined);
    assert.equal((JSON.parse(s.read('aws-stdin')!) as { error: string }).error, 'Cairn.AgentCrashed');
  });

  test('an agent kind the script does not know is refused before anything is installed', () => {
    const s = setup();
    const r = spawnSync('bash', ['-c', `CAIRN_AGENT_KIND=deb bash ${join(s.dir, 'script.sh')}`], {
      encoding: 'utf8',
      env: {
        PATH: `${join(s.dir, 'bin')}:/usr/bin:/bin`,
        CAIRN_HOME: join(s.dir, 'opt'),
        CAIRN_AGENT_SHA256: s.sha,
        SSM_operation: 'install',
        SSM_planId: 'orders-db',
      },
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /unknown agent kind/);
    assert.equal(existsSync(join(s.dir, 'opt')), false);
  });

  test('json_text makes any cause the inside of a JSON string: quotes, backslashes and line breaks escaped, other controls dropped', () => {
    const fn = /^json_text\(\) \{\n[\s\S]*?\n\}$/m.exec(agentDocumentScript())?.[0];
    assert.ok(fn, 'the script defines json_text');
    const cause = 'path "C:\\x"\nline\ttab\r\u0001bell\u0007 ünï';
    const r = spawnSync('bash', ['-c', `${fn}\njson_text "$CAUSE"`], { encoding: 'utf8', env: { CAUSE: cause, PATH: '/usr/bin:/bin' } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(`"${r.stdout}"`), cause.replaceAll('\u0001', '').replaceAll('\u0007', ''));
  });
});
