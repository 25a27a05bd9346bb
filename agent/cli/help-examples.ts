import type { Command } from 'commander';

/** One example: what it does, then the command line as it is typed (a shell redirection may follow it). */
export type Example = readonly [what: string, line: string];

/**
 * An example for every command, by its path after `cairn` ('' is the program itself), shown
 * at the end of its --help and in its man page. They live here rather than in each command's
 * file so that one table can be checked whole: test/agent/cli/help-examples.test.ts parses
 * every line against the registered commands and fails on a command without one.
 */
export const HELP_EXAMPLES: Readonly<Record<string, readonly Example[]>> = {
  '': [
    ['list the snapshots of a repository', 'cairn --repo /srv/backups/repo snapshots'],
    ['the help of one command', 'cairn help backup'],
  ],
  init: [
    ['create a repository in a directory (the passphrase from CAIRN_PASSWORD or a prompt)', 'cairn init --repo /srv/backups/repo'],
    [
      'create one in S3, opened through AWS KMS',
      'cairn init --repo s3://my-backups/cairn --kms-key-id arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    ],
  ],
  backup: [
    ['back up a directory without its logs, tagged daily', "cairn backup /srv/app --exclude '*.log' --tag daily"],
    ['back up the PostgreSQL database app with pg_dump', 'cairn backup --engine pgdump --db-host localhost --db-name app'],
    ['what a backup would add, writing nothing', 'cairn backup --dry-run /srv/app'],
  ],
  engines: [['list the engines --engine takes, and what each needs', 'cairn engines']],
  snapshots: [
    ['the snapshots of one host with the tag daily', 'cairn snapshots --host web1 --tag daily'],
    ['grouped by host and paths, as forget groups them', 'cairn snapshots --group-by host,paths'],
  ],
  restore: [
    ['restore the newest snapshot into an empty directory', 'cairn restore latest --target /tmp/restored'],
    ['restore one file of an older snapshot', 'cairn restore 3f2a9c1e --include config/app.yaml --target /tmp/r'],
    ['point-in-time recovery of a database', 'cairn restore --to-time 2026-11-23T10:15:00Z --target /var/lib/postgresql/restored'],
  ],
  verify: [
    ['check the structure and read a tenth of the data back', 'cairn verify --read-data-subset 10%'],
    ['read and authenticate every piece', 'cairn verify --read-data'],
  ],
  drill: [['restore the newest snapshot to a scratch directory and check it', 'cairn drill latest --thorough']],
  forget: [
    ['see what a retention policy would remove', 'cairn forget --keep-daily 7 --keep-weekly 4 --dry-run'],
    ['forget one snapshot by its id', 'cairn forget 3f2a9c1e'],
  ],
  pin: [['keep a snapshot whatever the retention policy says', 'cairn pin 3f2a9c1e']],
  unpin: [['let the retention policy decide about it again', 'cairn unpin 3f2a9c1e']],
  prune: [
    ['what prune would delete and repack', 'cairn prune --dry-run'],
    ['delete unused data, repacking packs more than 5% unused', 'cairn prune --max-unused 5%'],
  ],
  unlock: [['remove the locks of operations that ended or died', 'cairn unlock']],
  history: [['the audit trail, one JSON object a line', 'cairn history --json']],
  stats: [['sizes, deduplication and compression ratios', 'cairn stats']],
  check: [['check the structure without reading the data', 'cairn check']],
  repair: [['rebuild the index after check found it damaged', 'cairn repair index']],
  'repair index': [['say what the rebuilt index would hold, changing nothing', 'cairn repair index --dry-run']],
  'repair packs': [['salvage the good pieces of the damaged packs', 'cairn repair packs']],
  'repair snapshots': [['see which files a repaired newest snapshot would leave out', 'cairn repair snapshots latest --dry-run']],
  copy: [['copy every snapshot the off-site repository lacks', 'cairn copy --to-repo s3://offsite-bucket/main --to-init']],
  ls: [['list a directory of the newest snapshot and everything below it', 'cairn ls latest config --recursive']],
  find: [
    ['which snapshots hold a file named app.yaml', "cairn find 'app.yaml'"],
    ['configuration files in the snapshots of one host', "cairn find '*.conf' --host web1"],
  ],
  diff: [['what changed between a snapshot and the newest one', 'cairn diff 3f2a9c1e latest']],
  dump: [
    ['write one file of the newest snapshot to stdout', 'cairn dump latest config/app.yaml > app.yaml.old'],
    ['a directory as a tar archive, extracted elsewhere', 'cairn dump latest /srv/app | tar -x -C /tmp/app'],
  ],
  tag: [['add a tag to a snapshot', 'cairn tag 3f2a9c1e --add release-1.4']],
  key: [['list the keys that open the repository', 'cairn key list']],
  'key list': [['list the keys that open the repository', 'cairn key list']],
  'key add': [['add a passphrase read from a file', 'cairn key add --new-password-file /root/new.pass']],
  'key remove': [['remove a key by the id key list shows', 'cairn key remove 5b1e2d7a']],
  'key passwd': [['change the passphrase in use', 'cairn key passwd --new-password-file /root/new.pass']],
  'key export': [['write a recovery kit to print', 'cairn key export --recovery-kit recovery-kit.txt']],
  'key import': [['add a passphrase from a recovery kit', 'cairn key import --recovery-kit recovery-kit.txt']],
  agent: [['one scheduled binlog archive run of a plan (what the SSM document runs)', 'cairn agent archive --plan-id nightly-db']],
  'wal-push': [["what PostgreSQL runs for archive_command = 'cairn wal-push %p'", 'cairn wal-push pg_wal/000000010000000000000001']],
  'wal-fetch': [
    [
      'what PostgreSQL runs for restore_command = \'cairn wal-fetch --stream pg-7301234567890123456 %f "%p"\'',
      'cairn wal-fetch --stream pg-7301234567890123456 000000010000000000000001 pg_wal/RECOVERYXLOG',
    ],
  ],
  'wal-daemon': [
    ['the state of the running WAL daemons', 'cairn wal-daemon --status'],
    ['stop them (PostgreSQL starts one again when it needs it)', 'cairn wal-daemon --stop'],
  ],
  'binlog-push': [['archive binlogs as a service', 'cairn binlog-push --follow --archive-name db1 --db-socket /run/mysqld/mysqld.sock']],
  pitr: [['the recoverable window of every log stream', 'cairn pitr status']],
  'pitr status': [['the window, gaps and lag of one stream', 'cairn pitr status --archive-stream mariadb-db1']],
  completion: [
    ['install bash completion for every user', 'cairn completion bash > /etc/bash_completion.d/cairn'],
    ['zsh, into a directory of $fpath', 'cairn completion zsh > /usr/local/share/zsh/site-functions/_cairn'],
    ['fish, for this user', 'cairn completion fish > ~/.config/fish/completions/cairn.fish'],
  ],
  generate: [['write the man pages (man cairn-backup)', 'cairn generate --man /usr/local/share/man/man1']],
};

/** The path of a command as HELP_EXAMPLES keys it: 'key list' for `cairn key list`. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** The Examples section of a --help. */
export function examplesText(examples: readonly Example[]): string {
  return `\nExamples:\n${examples.map(([what, line]) => `  # ${what}\n  ${line}\n`).join('')}`;
}

/**
 * Adds its examples after each registered command's --help (only the commands loaded: see
 * command-table.ts). A command without any is left as it is; the test above fails on it.
 */
export function addHelpExamples(program: Command): void {
  const walk = (cmd: Command): void => {
    const examples = HELP_EXAMPLES[commandPath(cmd)];
    if (examples) cmd.addHelpText('after', examplesText(examples));
    cmd.commands.forEach(walk);
  };
  walk(program);
}
