import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CAIRN_BIN } from '../helpers/cli.ts';
import {
  commandLine,
  expandSpecifiers,
  parseEnvironmentAssignments,
  parseEnvironmentFile,
  parseUnit,
  values,
  type Unit,
} from './systemd-syntax.ts';

/**
 * What test/docs/systemd-units.test.ts runs the units in: a fake root, a temporary directory
 * standing for `/` (every absolute path the units, docs/systemd/example.env and
 * docs/systemd/cairn.cron name is taken under it; /usr/local/bin/cairn there is a two-line wrapper
 * running this checkout's CLI), and a runner doing for a service what systemd would.
 */

export const UNITS = join(import.meta.dirname, '..', '..', 'docs', 'systemd');
export const INSTANCE = 'web';
export const SERVICES = ['cairn-backup@.service', 'cairn-prune@.service', 'cairn-verify@.service'];
/** The only binaries the units run: what the docs install there. */
export const INSTALLED = { cairn: '/usr/local/bin/cairn', onFailure: '/usr/local/lib/cairn/cairn-on-failure' };
const PASSPHRASE = 'a long passphrase for the units test';

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(argv: string[], env: Record<string, string> = {}): Promise<Ran> {
  const [file, ...args] = argv as [string, ...string[]];
  return new Promise((resolve) => {
    execFile(file, args, { env, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 127) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The environment a run gets beside the unit's own: what systemd gives a root service, and prune's grace cut to a second (a test-only speed-up). */
export const baseEnv = (): Record<string, string> => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', CAIRN_GC_GRACE: '1' });

/** Absolute paths in `text` (after a space, =, a quote, or at the start) taken under the fake root, unless they are under it already. */
export const rooted = (root: string, text: string): string =>
  text.replace(/(^|[\s="'>])\/(?=[a-z])/g, (match: string, before: string, offset: number) =>
    text.startsWith(`${root}/`, offset + before.length) ? match : `${before}${root}/`,
  );

/** A fake root: the example job's sources, its environment file, passphrase and metrics directory, and the cairn wrapper. */
export function makeRoot(): string {
  // Read first: an example.env this test cannot read leaves no directory behind.
  const example = parseEnvironmentFile(readFileSync(join(UNITS, 'example.env'), 'utf8'));
  const root = mkdtempSync(join(tmpdir(), 'cairn-units-'));
  mkdirSync(join(root, 'srv/www/cache'), { recursive: true });
  writeFileSync(join(root, 'srv/www/index.html'), '<h1>served</h1>\n');
  writeFileSync(join(root, 'srv/www/cache/.nobackup'), '');
  writeFileSync(join(root, 'srv/www/cache/blob'), 'regenerated, never backed up\n');
  mkdirSync(join(root, 'etc/cairn'), { recursive: true });
  writeFileSync(join(root, 'etc/app.conf'), 'port = 8080\n');
  writeFileSync(join(root, 'etc/cairn/web.passphrase'), PASSPHRASE, { mode: 0o600 });
  const env = [...example].map(([key, value]) => `${key}="${rooted(root, value)}"`).join('\n');
  writeFileSync(join(root, `etc/cairn/${INSTANCE}.env`), `${env}\n`, { mode: 0o600 });
  mkdirSync(join(root, 'var/lib/prometheus/node-exporter'), { recursive: true });
  mkdirSync(join(root, 'var/log'), { recursive: true });
  mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
  writeFileSync(join(root, 'usr/local/bin/cairn'), `#!/bin/sh\nexec '${process.execPath}' '${CAIRN_BIN}' "$@"\n`, { mode: 0o755 });
  return root;
}

export function jobEnv(root: string): Record<string, string> {
  return Object.fromEntries(parseEnvironmentFile(readFileSync(join(root, `etc/cairn/${INSTANCE}.env`), 'utf8')));
}

/** A unit as systemd loads instance INSTANCE of it: specifiers expanded in the values (not in comments). */
export function loadUnit(name: string, text = readFileSync(join(UNITS, name), 'utf8')): Unit {
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
 * systemd: UMask=, CapabilityBoundingSet= and NoNewPrivileges=. Nice= and IOSchedulingClass= only
 * schedule (systemd-analyze checks them): applied here, the services at nice 19 and in the idle I/O
 * class got next to no CPU beside a busy test run (one test took 15.7 s with two test files at once,
 * 108 s with four), so SCHEDULING_ONLY names them and they are not applied.
 */
export function serviceCommands(unit: Unit, root: string): { env: Map<string, string>; commands: string[][] } {
  const env = parseEnvironmentAssignments(values(unit, 'Service', 'Environment'));
  for (const file of values(unit, 'Service', 'EnvironmentFile')) {
    const path = rooted(root, file.replace(/^-/, ''));
    if (!existsSync(path) && file.startsWith('-')) continue;
    for (const [key, value] of parseEnvironmentFile(readFileSync(path, 'utf8'))) env.set(key, value);
  }
  const wrapper: string[] = [];
  const umask = values(unit, 'Service', 'UMask').at(-1);
  if (umask) wrapper.push('/bin/sh', '-c', `umask ${umask} && exec "$@"`, 'sh');
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

/** Unit keys and the cron lines' prefix that change only how the kernel schedules a run, not what it does. */
export const SCHEDULING_ONLY = { keys: ['Nice', 'IOSchedulingClass'], cronPrefix: 'nice -n 19 ionice -c 3 ' };

/** Runs a Type=oneshot service's ExecStart= lines in order, stopping at the first that fails, as systemd does. */
export async function runService(unit: Unit, root: string): Promise<Ran & { ran: number }> {
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
export async function cairn(root: string, ...args: string[]): Promise<Ran> {
  const r = await run([join(root, INSTALLED.cairn), ...args], { ...baseEnv(), ...jobEnv(root) });
  assert.equal(r.code, 0, `cairn ${args.join(' ')}: ${r.stderr}`);
  return r;
}

export async function snapshots(root: string): Promise<Array<{ id: string; tags: string[]; paths: string[] }>> {
  const r = await cairn(root, '--json', 'snapshots');
  const line = r.stdout.split('\n').find((l) => l.includes('"type":"snapshots"')) ?? '{}';
  return (JSON.parse(line) as { snapshots: Array<{ id: string; tags: string[]; paths: string[] }> }).snapshots;
}

/** The cron entries of docs/systemd/cairn.cron: variable lines, and `m h dom mon dow user command` lines. */
export function cronEntries(text: string): { variables: Map<string, string>; commands: string[] } {
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
