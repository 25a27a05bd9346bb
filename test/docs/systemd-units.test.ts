import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CAIRN_BIN } from '../helpers/cli.ts';
import {
  commandLine,
  expandSpecifiers,
  parseEnvironmentAssignments,
  parseEnvironmentFile,
  parseUnit,
  values,
  variablesRead,
  type Unit,
} from './systemd-syntax.ts';

/**
 * docs/systemd/ (docs/without-aws.md): systemd checks every unit, the timers' calendars are valid,
 * and the command lines the services and the cron file hold really back up, forget, prune and
 * verify a repository. They run against a fake root, a temporary directory standing for `/`: every
 * absolute path the units, docs/systemd/example.env and docs/systemd/cairn.cron name is taken
 * under it, and /usr/local/bin/cairn there is a two-line wrapper running this checkout's CLI.
 */

const UNITS = join(import.meta.dirname, '..', '..', 'docs', 'systemd');
const INSTANCE = 'web';
const SERVICES = ['cairn-backup@.service', 'cairn-prune@.service', 'cairn-verify@.service'];
/** The only binaries the units run: what the docs install there. */
const INSTALLED = { cairn: '/usr/local/bin/cairn', onFailure: '/usr/local/lib/cairn/cairn-on-failure' };
const PASSPHRASE = 'a long passphrase for the units test';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(argv: string[], env: Record<string, string> = {}): Promise<Ran> {
  const [file, ...args] = argv as [string, ...string[]];
  return new Promise((resolve) => {
    execFile(file, args, { env, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 127) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The environment a run gets beside the unit's own: what systemd gives a root service, and prune's grace cut to a second (a test-only speed-up). */
const baseEnv = (): Record<string, string> => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', CAIRN_GC_GRACE: '1' });

/** Absolute paths in `text` (after a space, =, a quote, or at the start) taken under the fake root, unless they are under it already. */
const rooted = (root: string, text: string): string =>
  text.replace(/(^|[\s="'>])\/(?=[a-z])/g, (match: string, before: string, offset: number) =>
    text.startsWith(`${root}/`, offset + before.length) ? match : `${before}${root}/`,
  );

/** A fake root: the example job's sources, its environment file, passphrase and metrics directory, and the cairn wrapper. */
function makeRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'cairn-units-'));
  mkdirSync(join(root, 'srv/www/cache'), { recursive: true });
  writeFileSync(join(root, 'srv/www/index.html'), '<h1>served</h1>\n');
  writeFileSync(join(root, 'srv/www/cache/.nobackup'), '');
  writeFileSync(join(root, 'srv/www/cache/blob'), 'regenerated, never backed up\n');
  mkdirSync(join(root, 'etc/cairn'), { recursive: true });
  writeFileSync(join(root, 'etc/app.conf'), 'port = 8080\n');
  writeFileSync(join(root, 'etc/cairn/web.passphrase'), PASSPHRASE, { mode: 0o600 });
  const example = parseEnvironmentFile(readFileSync(join(UNITS, 'example.env'), 'utf8'));
  const env = [...example].map(([key, value]) => `${key}="${rooted(root, value)}"`).join('\n');
  writeFileSync(join(root, `etc/cairn/${INSTANCE}.env`), `${env}\n`, { mode: 0o600 });
  mkdirSync(join(root, 'var/lib/prometheus/node-exporter'), { recursive: true });
  mkdirSync(join(root, 'var/log'), { recursive: true });
  mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
  writeFileSync(join(root, 'usr/local/bin/cairn'), `#!/bin/sh\nexec '${process.execPath}' '${CAIRN_BIN}' "$@"\n`, { mode: 0o755 });
  return root;
}

function jobEnv(root: string): Record<string, string> {
  return Object.fromEntries(parseEnvironmentFile(readFileSync(join(root, `etc/cairn/${INSTANCE}.env`), 'utf8')));
}

/** A unit as systemd loads instance INSTANCE of it: specifiers expanded in the values (not in comments). */
function loadUnit(name: string, text = readFileSync(join(UNITS, name), 'utf8')): Unit {
  const unit = parseUnit(text);
  for (const section of unit.values())
    for (const [key, list] of section)
      section.set(
        key,
        list.map((value) => expandSpecifiers(value, name, INSTANCE)),
      );
  return unit;
}

/**
 * What systemd would run for one instance: the environment (Environment= then the EnvironmentFile,
 * which wins), and each ExecStart= as argv, under the settings this test can reproduce without
 * systemd: UMask=, Nice=, IOSchedulingClass=idle, CapabilityBoundingSet= and NoNewPrivileges=.
 */
function serviceCommands(unit: Unit, root: string): { env: Map<string, string>; commands: string[][] } {
  const env = parseEnvironmentAssignments(values(unit, 'Service', 'Environment'));
  for (const file of values(unit, 'Service', 'EnvironmentFile')) {
    const path = rooted(root, file.replace(/^-/, ''));
    if (!existsSync(path) && file.startsWith('-')) continue;
    for (const [key, value] of parseEnvironmentFile(readFileSync(path, 'utf8'))) env.set(key, value);
  }
  const wrapper: string[] = [];
  const umask = values(unit, 'Service', 'UMask').at(-1);
  if (umask) wrapper.push('/bin/sh', '-c', `umask ${umask} && exec "$@"`, 'sh');
  const nice = values(unit, 'Service', 'Nice').at(-1);
  if (nice) wrapper.push('nice', '-n', nice);
  if (values(unit, 'Service', 'IOSchedulingClass').at(-1) === 'idle') wrapper.push('ionice', '-c', '3');
  const caps = values(unit, 'Service', 'CapabilityBoundingSet').flatMap((v) => v.split(/\s+/));
  const noNewPrivileges = values(unit, 'Service', 'NoNewPrivileges').at(-1) === 'yes';
  if (caps.length > 0 || noNewPrivileges) {
    wrapper.push('setpriv');
    if (caps.length > 0)
      wrapper.push(`--bounding-set=-all,${caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',')}`, '--inh-caps=-all');
    if (noNewPrivileges) wrapper.push('--no-new-privs');
    wrapper.push('--');
  }
  const commands = values(unit, 'Service', 'ExecStart').map((line) => {
    const argv = commandLine(line, env);
    assert.equal(argv[0], INSTALLED.cairn, `${line}: the units run cairn from ${INSTALLED.cairn}`);
    return [...wrapper, ...argv.map((word) => rooted(root, word))];
  });
  return { env, commands };
}

/** Runs a Type=oneshot service's ExecStart= lines in order, stopping at the first that fails, as systemd does. */
async function runService(unit: Unit, root: string): Promise<Ran & { ran: number }> {
  const { env, commands } = serviceCommands(unit, root);
  const all: Ran & { ran: number } = { code: 0, stdout: '', stderr: '', ran: 0 };
  for (const argv of commands) {
    const r = await run(argv, { ...baseEnv(), ...Object.fromEntries(env) });
    Object.assign(all, { code: r.code, stdout: all.stdout + r.stdout, stderr: all.stderr + r.stderr, ran: all.ran + 1 });
    if (r.code !== 0) break;
  }
  return all;
}

/** The installed cairn (the fake root's wrapper) with the job's environment, as an operator runs it after sourcing the file. */
async function cairn(root: string, ...args: string[]): Promise<Ran> {
  const r = await run([join(root, INSTALLED.cairn), ...args], { ...baseEnv(), ...jobEnv(root) });
  assert.equal(r.code, 0, `cairn ${args.join(' ')}: ${r.stderr}`);
  return r;
}

async function snapshots(root: string): Promise<Array<{ id: string; tags: string[]; paths: string[] }>> {
  const r = await cairn(root, '--json', 'snapshots');
  const line = r.stdout.split('\n').find((l) => l.includes('"type":"snapshots"')) ?? '{}';
  return (JSON.parse(line) as { snapshots: Array<{ id: string; tags: string[]; paths: string[] }> }).snapshots;
}

/** systemd-analyze, or why not: tests that need it skip, saying so (skipped is not passing). */
const analyze = await run(['systemd-analyze', '--version']);
const noAnalyze = analyze.code === 0 ? false : 'systemd-analyze is not installed (Debian: apt-get install systemd)';

/** The unit files as systemd-analyze can check them here: ExecStart= naming this checkout's bin and hook. */
function unitsForVerify(edit: (name: string, text: string) => string = (_, t) => t): { dir: string; files: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-units-verify-'));
  const files = readdirSync(UNITS).filter((n) => n.endsWith('.service') || n.endsWith('.timer'));
  for (const name of files) {
    const text = readFileSync(join(UNITS, name), 'utf8')
      .replaceAll(INSTALLED.cairn, join(CAIRN_BIN, '..', 'bin.js'))
      .replaceAll(INSTALLED.onFailure, join(UNITS, 'cairn-on-failure'));
    writeFileSync(join(dir, name), edit(name, text));
  }
  return { dir, files: files.map((n) => join(dir, n)) };
}

describe('docs/systemd: units systemd accepts', () => {
  it('every unit passes systemd-analyze verify without a warning', { skip: noAnalyze }, async () => {
    const { dir, files } = unitsForVerify();
    try {
      assert.ok(files.length >= 7, `found ${files.length} unit files`);
      const r = await run(['systemd-analyze', 'verify', ...files], baseEnv());
      // An unknown key or a value systemd cannot parse is only a warning (exit 0): stderr must be empty too.
      assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 0, stderr: '' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the check fails on a command that is not there and on a key systemd does not know', { skip: noAnalyze }, async () => {
    const missing = unitsForVerify((name, text) =>
      name === 'cairn-backup@.service' ? text.replace(/ExecStart=\S+/, 'ExecStart=/nonexistent/cairn') : text,
    );
    const unknown = unitsForVerify((name, text) =>
      name === 'cairn-verify@.service' ? text.replace('Nice=19', 'Nice=19\nNicenes=19') : text,
    );
    try {
      const a = await run(['systemd-analyze', 'verify', ...missing.files], baseEnv());
      assert.notEqual(a.code, 0);
      assert.match(a.stderr, /\/nonexistent\/cairn/);
      const b = await run(['systemd-analyze', 'verify', ...unknown.files], baseEnv());
      assert.match(b.stderr, /Unknown key 'Nicenes'/);
    } finally {
      rmSync(missing.dir, { recursive: true, force: true });
      rmSync(unknown.dir, { recursive: true, force: true });
    }
  });

  it(
    'each timer is persistent, spread by a random delay, on a valid calendar, and starts a service that is here',
    { skip: noAnalyze },
    async () => {
      const timers = readdirSync(UNITS).filter((n) => n.endsWith('.timer'));
      assert.deepEqual(timers.map((t) => t.replace('.timer', '.service')).sort(), [...SERVICES].sort());
      for (const name of timers) {
        const unit = loadUnit(name);
        assert.deepEqual(values(unit, 'Timer', 'Persistent'), ['true'], name);
        assert.equal(values(unit, 'Timer', 'RandomizedDelaySec').length, 1, `${name}: RandomizedDelaySec`);
        const calendars = values(unit, 'Timer', 'OnCalendar');
        assert.ok(calendars.length > 0, `${name}: OnCalendar`);
        const r = await run(['systemd-analyze', 'calendar', ...calendars], baseEnv());
        assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      }
      const bad = await run(['systemd-analyze', 'calendar', 'Sun *-*-* 25:00:00'], baseEnv());
      assert.notEqual(bad.code, 0, 'systemd-analyze calendar refuses an invalid time');
    },
  );

  it('OnFailure= names a unit that is here, and its hook reports the unit that failed', async () => {
    for (const name of SERVICES) {
      const onFailure = values(loadUnit(name), 'Unit', 'OnFailure');
      assert.deepEqual(onFailure, [`cairn-failure@${name.replace('@.', `@${INSTANCE}.`)}.service`], name);
    }
    assert.ok(existsSync(join(UNITS, 'cairn-failure@.service')));
    const hook = values(loadUnit('cairn-failure@.service'), 'Service', 'ExecStart');
    assert.deepEqual(hook, [`${INSTALLED.onFailure} ${INSTANCE}`]);
    // No sendmail on this PATH: the report goes to stdout (the journal), with the critical line first.
    const r = await run([join(UNITS, 'cairn-on-failure'), 'cairn-backup@web.service'], { PATH: '/usr/bin:/bin' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout.split('\n')[0] ?? '',
      /^<2>cairn: cairn-backup@web\.service failed on \S+; see: journalctl -u cairn-backup@web\.service$/,
    );
  });
});

describe('docs/systemd: the services run', () => {
  let root = '';
  before(async () => {
    root = makeRoot();
    await cairn(root, 'init');
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('every variable a unit reads is set by example.env or by the unit itself', () => {
    const example = parseEnvironmentFile(readFileSync(join(UNITS, 'example.env'), 'utf8'));
    for (const name of SERVICES) {
      const unit = loadUnit(name);
      const defaults = parseEnvironmentAssignments(values(unit, 'Service', 'Environment'));
      for (const line of values(unit, 'Service', 'ExecStart'))
        for (const variable of variablesRead(line)) assert.ok(example.has(variable) || defaults.has(variable), `${name} reads ${variable}`);
      assert.deepEqual(values(unit, 'Service', 'EnvironmentFile'), [`/etc/cairn/${INSTANCE}.env`], name);
    }
  });

  it("the services' command lines back up, forget, prune and verify the example job, and the backup restores", async () => {
    const backupUnit = loadUnit('cairn-backup@.service');
    const first = await runService(backupUnit, root);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^snapshot [0-9a-f]{8} saved/m, 'text output for the journal');
    writeFileSync(join(root, 'srv/www/index.html'), '<h1>served, changed</h1>\n');
    const second = await runService(backupUnit, root);
    assert.equal(second.code, 0, second.stderr);
    const made = await snapshots(root);
    assert.equal(made.length, 2);
    assert.deepEqual(made[0]?.tags, ['scheduled']);
    assert.deepEqual(made[0]?.paths, [join(root, 'srv/www'), join(root, 'etc')]);

    // Both snapshots are of today: --keep-daily 7 keeps the newer one, and prune frees the older one's data.
    const prune = await runService(loadUnit('cairn-prune@.service'), root);
    assert.equal(prune.code, 0, prune.stderr);
    assert.equal(prune.ran, 2, 'forget, then prune');
    assert.match(prune.stdout, /^deleted \d+ pack/m);
    const kept = await snapshots(root);
    assert.deepEqual(
      kept.map((s) => s.id),
      [made[1]?.id],
    );

    const verify = await runService(loadUnit('cairn-verify@.service'), root);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /no problems found/);

    // One metrics file, readable by node_exporter's own user, holding every operation's series.
    const metricsFile = jobEnv(root).CAIRN_METRICS_FILE as string;
    assert.ok(metricsFile.startsWith(root));
    assert.equal(statSync(metricsFile).mode & 0o004, 0o004, 'the metrics file is readable by others');
    const metrics = readFileSync(metricsFile, 'utf8');
    for (const operation of ['backup', 'prune', 'verify'])
      assert.match(metrics, new RegExp(`^cairn_last_run_success\\{operation="${operation}",[^}]*\\} 1$`, 'm'), operation);

    const target = join(root, 'restored');
    await cairn(root, 'restore', 'latest', '--target', target);
    assert.equal(readFileSync(join(target, 'www/index.html'), 'utf8'), '<h1>served, changed</h1>\n');
    assert.equal(readFileSync(join(target, 'etc/app.conf'), 'utf8'), 'port = 8080\n');
    assert.equal(existsSync(join(target, 'www/cache')), false, '--exclude-if-present .nobackup from example.env reached the backup');
  });

  it('retention and verify work with only the capabilities their units keep, on a repository another user owns', async () => {
    const repository = jobEnv(root).CAIRN_REPOSITORY as string;
    const chownTree = (path: string): void => {
      chownSync(path, 4242, 4242);
      if (statSync(path).isDirectory()) {
        chmodSync(path, 0o700);
        for (const entry of readdirSync(path)) chownTree(join(path, entry));
      }
    };
    const backup = await runService(loadUnit('cairn-backup@.service'), root);
    assert.equal(backup.code, 0, backup.stderr);
    chownTree(repository);
    for (const name of ['cairn-prune@.service', 'cairn-verify@.service']) {
      assert.ok(values(loadUnit(name), 'Service', 'CapabilityBoundingSet').length > 0, `${name} drops capabilities`);
      const r = await runService(loadUnit(name), root);
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    }
  });

  it('a unit whose command line is broken fails, and runs nothing after the failing line', async () => {
    const text = readFileSync(join(UNITS, 'cairn-prune@.service'), 'utf8').replace('forget --lock-wait', 'forget --lock-wiat');
    const before = (await snapshots(root)).length;
    const r = await runService(loadUnit('cairn-prune@.service', text), root);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.ran, 1, 'prune did not run after forget failed');
    assert.equal((await snapshots(root)).length, before);
  });
});

/** The cron entries of docs/systemd/cairn.cron: variable lines, and `m h dom mon dow user command` lines. */
function cronEntries(text: string): { variables: Map<string, string>; commands: string[] } {
  const variables = new Map<string, string>();
  const commands: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const variable = /^([A-Z_]+)=(.*)$/.exec(line);
    if (variable) {
      variables.set(variable[1] as string, variable[2] as string);
      continue;
    }
    const entry = /^([\d*/,-]+)\s+([\d*/,-]+)\s+([\d*/,-]+)\s+([\d*/,-]+)\s+([\d*/,-]+)\s+root\s+(.+)$/.exec(line);
    assert.ok(entry, `not a cron.d entry (m h dom mon dow root command): ${line}`);
    const command = entry[6] as string;
    // cron turns an unescaped % into a newline (the rest is stdin): the lines must not hold one.
    assert.doesNotMatch(command, /(^|[^\\])%/, `unescaped % in: ${command}`);
    commands.push(command);
  }
  return { variables, commands };
}

describe('docs/systemd/cairn.cron', () => {
  let root = '';
  before(async () => {
    root = makeRoot();
    await cairn(root, 'init');
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('its lines back up, forget, prune and verify the example job, silently when they succeed', async () => {
    const { variables, commands } = cronEntries(readFileSync(join(UNITS, 'cairn.cron'), 'utf8'));
    assert.equal(variables.get('SHELL'), '/bin/sh');
    assert.deepEqual(
      commands.map((c) => /\/cairn (\w+)/.exec(c)?.[1]),
      ['backup', 'forget', 'verify'],
    );
    const [backup, prune, verify] = commands.map((c) => rooted(root, c)) as [string, string, string];
    for (const path of [backup, prune, verify].flatMap((c) => [...c.matchAll(/(?:^|[\s="'>])(\/[^\s"']*)/g)].map((m) => m[1] as string)))
      assert.ok(path.startsWith(`${root}/`), `${path} is outside the fake root: rooted() must learn its form`);
    // cron's PATH from the file, with this checkout's node ahead (the wrapper names it by its full path anyway).
    const env = { ...baseEnv(), PATH: `${variables.get('PATH') ?? ''}:${process.env.PATH ?? ''}`, SHELL: '/bin/sh' };
    const cron = (command: string): Promise<Ran> => run(['/bin/sh', '-c', command], env);

    for (const content of ['one', 'two']) {
      writeFileSync(join(root, 'srv/www/index.html'), content);
      const r = await cron(backup);
      assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 0, stdout: '', stderr: '' }, 'no mail on success');
    }
    assert.equal((await snapshots(root)).length, 2);
    const pruned = await cron(prune);
    assert.deepEqual({ code: pruned.code, stdout: pruned.stdout, stderr: pruned.stderr }, { code: 0, stdout: '', stderr: '' });
    assert.equal((await snapshots(root)).length, 1);
    assert.match(readFileSync(join(root, 'var/log/cairn-web-prune.log'), 'utf8'), /^deleted \d+ pack/m);
    const verified = await cron(verify);
    assert.deepEqual({ code: verified.code, stdout: verified.stdout, stderr: verified.stderr }, { code: 0, stdout: '', stderr: '' });

    // A failure prints the run's output, which cron mails.
    writeFileSync(join(root, 'etc/cairn/web.passphrase'), 'not the passphrase');
    const failed = await cron(backup);
    assert.match(failed.stdout, /passphrase/i, "the failed run's output is printed");
  });
});
