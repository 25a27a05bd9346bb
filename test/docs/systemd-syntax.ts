/**
 * The part of systemd's unit-file, environment-file and command-line syntax that the units in
 * docs/systemd/ use, read the way systemd reads it (systemd.syntax(5), systemd.service(5)
 * "Command lines", systemd.exec(5) "EnvironmentFile="), so a test can run the command lines a unit
 * holds. Anything outside that part (backslash escapes, $VAR inside a word, ExecStart prefixes,
 * other specifiers) is refused with an error rather than read differently from systemd: a unit that
 * needs more makes the test fail until this file learns it.
 */

export type Unit = Map<string, Map<string, string[]>>;

/** Sections → keys → every value given (in order; `Key=` with nothing resets the list, as systemd does). */
export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1] as string, section);
      continue;
    }
    const assignment = /^([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*)$/.exec(line);
    if (!assignment || !section) throw new Error(`line ${i + 1}: not a section header or Key=value: ${raw}`);
    const [, key, value] = assignment as unknown as [string, string, string];
    section.set(key, value === '' ? [] : [...(section.get(key) ?? []), value]);
  }
  return unit;
}

export function values(unit: Unit, section: string, key: string): string[] {
  return unit.get(section)?.get(key) ?? [];
}

/** %i, %I, %n, %p and %% for an instance of a template named like `cairn-backup@.service`. */
export function expandSpecifiers(text: string, template: string, instance: string): string {
  const [prefix, suffix] = template.split('@.') as [string, string];
  const table: Record<string, string> = { i: instance, I: instance, n: `${prefix}@${instance}.${suffix}`, p: prefix, '%': '%' };
  return text.replace(/%(.)/g, (_, c: string) => {
    const value = table[c];
    if (value === undefined) throw new Error(`specifier %${c} is not one this test knows (${template})`);
    return value;
  });
}

/** Words split at whitespace, "double" and 'single' quotes grouping and removed, as systemd splits them. */
export function splitWords(text: string): string[] {
  if (text.includes('\\')) throw new Error(`backslash escapes are not read by this test: ${text}`);
  const words: string[] = [];
  const re = /\s*(?:"([^"]*)"|'([^']*)'|([^\s"']+))(?=\s|$)/gy;
  let consumed = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    words.push(m[1] ?? m[2] ?? m[3] ?? '');
    consumed = re.lastIndex;
  }
  if (text.slice(consumed).trim() !== '') throw new Error(`cannot split ${JSON.stringify(text)} into words (a quote inside a word?)`);
  return words;
}

/** Environment= values: `A=b "C=d e"`, several assignments per line. */
export function parseEnvironmentAssignments(lines: string[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const word of lines.flatMap(splitWords)) {
    const eq = word.indexOf('=');
    if (eq < 1) throw new Error(`Environment= assignment without a name: ${word}`);
    env.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return env;
}

/**
 * An EnvironmentFile: KEY=VALUE lines, # and ; comments, a value either unquoted (trimmed) or
 * wholly in double or single quotes. Unquoted values holding a quote, a backslash, a space or a
 * character the shell acts on (& ; | < > ( ) $ `) are refused:
 * systemd and /bin/sh read those differently, and docs/systemd/example.env promises both read it alike.
 */
export function parseEnvironmentFile(text: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not KEY=VALUE: ${raw}`);
    const [, key, value] = m as unknown as [string, string, string];
    const quoted = /^"([^"\\$`]*)"$|^'([^']*)'$/.exec(value);
    if (quoted) env.set(key, quoted[1] ?? quoted[2] ?? '');
    else if (/["'\\$`\s&;|<>()]/.test(value))
      throw new Error(`line ${i + 1}: quote ${key}'s value wholly (systemd and sh read it alike then): ${raw}`);
    else env.set(key, value);
  }
  return env;
}

/**
 * An ExecStart= command line as systemd runs it: split into words, then a word that is exactly
 * `$NAME` replaced by the variable's value split into zero or more words (quotes respected and
 * removed), and `${NAME}` anywhere in a word by its exact value (one word).
 */
export function commandLine(line: string, env: ReadonlyMap<string, string>): string[] {
  if (/^[-@:+!]/.test(line)) throw new Error(`ExecStart prefixes are not read by this test: ${line}`);
  return splitWords(line).flatMap((word) => {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word);
    if (whole) return splitWords(env.get(whole[1] as string) ?? '');
    const expanded = word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => env.get(name) ?? '');
    if (expanded.includes('$')) throw new Error(`$ in ${JSON.stringify(word)} is neither a whole $NAME word nor \${NAME}`);
    return [expanded];
  });
}

/** Every variable a command line reads ($NAME and ${NAME}). */
export function variablesRead(line: string): string[] {
  return [...line.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g)].map((m) => m[1] as string);
}
