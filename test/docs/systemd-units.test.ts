import assert from 'node:assert/strict';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CAIRN_BIN } from '../helpers/cli.ts';
import {
  baseEnv,
  cairn,
  cronEntries,
  INSTALLED,
  INSTANCE,
  jobEnv,
  loadUnit,
  makeRoot,
  type Ran,
  rooted,
  run,
  runService,
  SCHEDULING_ONLY,
  SERVICES,
  snapshots,
  UNITS,
} from './systemd-fixture.ts';
import { parseEnvironmentAssignments, parseEnvironmentFile, values, variablesRead } from './systemd-syntax.ts';

/**
 * docs/systemd/ (docs/without-aws.md): systemd checks every unit, the timers' calendars are valid,
 * and the command lines the services and the cron file hold really back up, forget, prune and
 * verify a repository. They run against a fake root (systemd-fixture.ts): every
 * absolute path the units, docs/systemd/example.env and docs/systemd/cairn.cron name is taken
 * under it, and /usr/local/bin/cairn there is a two-line wrapper running this checkout's CLI.
 */

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
    // A PATH holding the tools the hook uses but no sendmail: the report goes to stdout (the journal), the critical line first.
    const bin = mkdtempSync(join(tmpdir(), 'cairn-hook-path-'));
    try {
      for (const tool of ['systemctl', 'journalctl', 'tail', 'hostname']) {
        const found = (await run(['/bin/sh', '-c', `command -v ${tool}`], { PATH: process.env.PATH ?? '' })).stdout.trim();
        if (found) symlinkSync(found, join(bin, tool));
      }
      const r = await run([join(UNITS, 'cairn-on-failure'), 'cairn-backup@web.service'], { PATH: bin });
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout.split('\n')[0] ?? '',
        /^<2>cairn: cairn-backup@web\.service failed on \S+; see: journalctl -u cairn-backup@web\.service$/,
      );
      // With a mailer (a stand-in sendmail keeping what it is given): the report is mailed to CAIRN_NOTIFY_MAILTO.
      const mailbox = join(bin, 'mailbox');
      writeFileSync(join(bin, 'sendmail'), `#!/bin/sh\n[ "$1" = -t ] && /bin/cat > '${mailbox}'\n`, { mode: 0o755 });
      const mailed = await run([join(UNITS, 'cairn-on-failure'), 'cairn-prune@web.service'], {
        PATH: bin,
        CAIRN_NOTIFY_MAILTO: 'ops@example.com',
      });
      assert.equal(mailed.code, 0, mailed.stderr);
      assert.match(readFileSync(mailbox, 'utf8'), /^To: ops@example\.com\nSubject: cairn: cairn-prune@web\.service failed on \S+\n\n/);
      // A mailer that fails fails the hook's unit, so that `systemctl --failed` shows nobody was told.
      writeFileSync(join(bin, 'sendmail'), '#!/bin/sh\nexit 75\n', { mode: 0o755 });
      const unsent = await run([join(UNITS, 'cairn-on-failure'), 'cairn-prune@web.service'], { PATH: bin });
      assert.equal(unsent.code, 1);
      assert.match(unsent.stdout, /^<3>cairn: could not mail the report to root/m);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

describe('docs/without-aws.md', () => {
  it("quotes the units' command lines and the cron line as the files hold them", () => {
    const page = readFileSync(join(UNITS, '..', 'without-aws.md'), 'utf8');
    for (const name of SERVICES)
      for (const line of values(loadUnit(name), 'Service', 'ExecStart'))
        assert.ok(page.includes(`\`${line.replace(INSTALLED.cairn, 'cairn')}\``), `${name}: ${line}`);
    const cronBlock = /```cron\n([\s\S]*?)```/.exec(page)?.[1] ?? '';
    const cronFile = readFileSync(join(UNITS, 'cairn.cron'), 'utf8');
    assert.ok(cronBlock.trim() !== '');
    for (const line of cronBlock.trim().split('\n')) assert.ok(cronFile.includes(`${line}\n`), line);
  });
});

describe('docs/systemd: the services run', () => {
  let root = '';
  before(async () => {
    root = makeRoot();
    await cairn(root, 'init');
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('every variable a unit reads is set by example.env, or to something by the unit itself', () => {
    const example = parseEnvironmentFile(readFileSync(join(UNITS, 'example.env'), 'utf8'));
    for (const name of SERVICES) {
      const unit = loadUnit(name);
      const defaults = parseEnvironmentAssignments(values(unit, 'Service', 'Environment'));
      for (const line of values(unit, 'Service', 'ExecStart'))
        for (const variable of variablesRead(line)) assert.ok(example.has(variable) || defaults.get(variable), `${name} reads ${variable}`);
      assert.deepEqual(values(unit, 'Service', 'EnvironmentFile'), [`/etc/cairn/${INSTANCE}.env`], name);
    }
  });

  it('/bin/sh reads example.env as systemd does (cron, restores and `cairn init` source it)', async () => {
    const example = parseEnvironmentFile(readFileSync(join(UNITS, 'example.env'), 'utf8'));
    const r = await run(['/bin/sh', '-c', `set -a && . '${join(UNITS, 'example.env')}' && exec env -0`], { PATH: '/usr/bin:/bin' });
    assert.equal(r.code, 0, r.stderr);
    const all = new Map(r.stdout.split('\0').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const sh = new Map([...example.keys()].map((key) => [key, all.get(key)]));
    assert.deepEqual(sh, example);
  });

  it('every service and cron line runs at nice 19 in the idle I/O class, and that prefix runs here', async () => {
    // These tests do not apply the two (systemd-fixture.ts, SCHEDULING_ONLY): they are checked here instead.
    for (const name of SERVICES) {
      const unit = loadUnit(name);
      assert.deepEqual(
        SCHEDULING_ONLY.keys.map((key) => values(unit, 'Service', key).at(-1)),
        ['19', 'idle'],
        name,
      );
    }
    const { commands } = cronEntries(readFileSync(join(UNITS, 'cairn.cron'), 'utf8'));
    for (const command of commands) {
      const runs = command.split(INSTALLED.cairn).length - 1;
      assert.ok(runs > 0);
      assert.equal(command.split(`${SCHEDULING_ONLY.cronPrefix}${INSTALLED.cairn}`).length - 1, runs, command);
    }
    const prefixed = await run(['/bin/sh', '-c', `${SCHEDULING_ONLY.cronPrefix}printf ok`], { PATH: '/usr/bin:/bin' });
    assert.deepEqual({ code: prefixed.code, stdout: prefixed.stdout }, { code: 0, stdout: 'ok' }, prefixed.stderr);
  });

  it("the services' command lines back up, forget, prune and verify the example job, and the backup restores", async () => {
    const backupUnit = loadUnit('cairn-backup@.service');
    const metricsFile = jobEnv(root).CAIRN_METRICS_FILE as string;
    assert.ok(metricsFile.startsWith(root));
    // node_exporter runs as its own user: the file each run leaves must be readable by others.
    const assertMetricsReadable = (after: string): void =>
      assert.equal(statSync(metricsFile).mode & 0o004, 0o004, `metrics file after ${after}`);
    const first = await runService(backupUnit, root);
    assert.equal(first.code, 0, first.stderr);
    assertMetricsReadable('backup');
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
    assertMetricsReadable('prune');
    assert.match(prune.stdout, /^deleted \d+ pack/m);
    const kept = await snapshots(root);
    assert.deepEqual(
      kept.map((s) => s.id),
      [made[1]?.id],
    );

    const verify = await runService(loadUnit('cairn-verify@.service'), root);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /no problems found/);

    assertMetricsReadable('verify');
    // One metrics file holding every operation's series.
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
    // Without the scheduling prefix, checked apart (SCHEDULING_ONLY): at nice 19 the runs got next to no CPU beside a busy test run.
    const [backup, prune, verify] = commands.map((c) => rooted(root, c.replaceAll(SCHEDULING_ONLY.cronPrefix, ''))) as [
      string,
      string,
      string,
    ];
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
