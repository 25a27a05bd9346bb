import picomatch from 'picomatch';

/**
 * Path patterns for --exclude and --include, compiled by picomatch (once, when
 * the matcher is made: a walk only runs regular expressions). `*` and `?` stay
 * within one path component, `**` crosses them, `[...]` (`[!...]` negated) is a
 * class, `{a,b}` and `{1..3}` are brace expansions, and `\` escapes the
 * character after it (`\*`, `\{`, `\\`). Every other character is itself:
 * parentheses, `+`, `@`, `!` and `|` are ordinary characters of names (no
 * extglobs, no negation), and so is a brace that is not part of a balanced
 * group. A pattern without a slash matches any component's name; with one, it
 * matches the whole relative path (a leading slash anchors it at the snapshot
 * root). An absolute path under one of the paths a snapshot was taken of
 * (`roots`) is taken relative to it, as `ls` and `dump` take a path. A name that
 * is not UTF-8 is matched by its display form (each invalid sequence as U+FFFD).
 */
export class PathMatcher {
  /** The patterns as given (empty ones left out), for messages. */
  readonly sources: string[];
  private readonly patterns: Array<{ regex: RegExp; byName: boolean; parts: Array<RegExp | 'any'> }>;

  constructor(patterns: string[], roots: string[] = []) {
    // Patterns are taken as written: spaces are ordinary characters of names (issue 20).
    this.sources = patterns.filter((p) => p.length > 0);
    this.patterns = this.sources.map((given) => {
      const pattern = given.startsWith('/') ? (relativeToRoots(given, roots) ?? given) : given;
      const trimmed = pattern.replace(/\/+$/, '');
      const anchored = trimmed.replace(/^\/+/, '');
      // `/` (or a path the snapshot was taken of): the whole snapshot.
      if (anchored === '' && given.startsWith('/')) return { regex: globToRegExp('**'), byName: false, parts: ['any'] };
      const byName = !trimmed.includes('/');
      return { regex: globToRegExp(anchored), byName, parts: anchored.split('/').map(componentMatcher) };
    });
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** `relPath` uses '/' separators and no leading slash. */
  matches(relPath: string): boolean {
    const name = relPath.slice(relPath.lastIndexOf('/') + 1);
    return this.patterns.some(({ regex, byName }) => regex.test(byName ? name : relPath));
  }

  /**
   * False only when nothing below the directory `dirRel` can match, so a walk
   * may skip reading its tree: a by-name pattern can match anywhere, a path
   * pattern only below directories its leading components match (`**`, and a
   * class or brace group that holds a slash, are taken to match anything).
   */
  mayMatchBelow(dirRel: string): boolean {
    const dir = dirRel.split('/');
    return this.patterns.some(({ byName, parts }) => {
      if (byName) return true;
      for (let i = 0; i < dir.length; i++) {
        const part = parts[i];
        if (part === undefined) return true; // the pattern matched an ancestor: everything below is covered
        if (part === 'any') return true;
        if (!part.test(dir[i] as string)) return false;
      }
      return true;
    });
  }

  /** True when the path or one of its ancestors matches (a matched directory covers its subtree). */
  matchesSelfOrAncestor(relPath: string): boolean {
    for (let end = relPath.indexOf('/'); end >= 0; end = relPath.indexOf('/', end + 1)) {
      if (this.matches(relPath.slice(0, end))) return true;
    }
    return this.matches(relPath);
  }
}

/**
 * `path` (absolute) relative to the snapshot root when it lies under one of the
 * paths the snapshot was taken of: `/srv/data/x` of a backup of /srv/data is
 * `/x`, of a backup of /srv/data and /etc `/data/x` (several paths are stored
 * side by side under their last names). Undefined when it lies under none.
 */
export function relativeToRoots(path: string, roots: string[]): string | undefined {
  for (const root of roots) {
    const base = root.replace(/\/+$/, '');
    if (base === '' || !(path === base || path.startsWith(`${base}/`))) continue;
    const rest = path.slice(base.length);
    return roots.length === 1 ? rest : `/${base.slice(base.lastIndexOf('/') + 1)}${rest}`;
  }
  return undefined;
}

const PICOMATCH: picomatch.PicomatchOptions = {
  dot: true, // `*` matches names starting with a dot: they are ordinary names here
  nonegate: true, // a leading `!` is a character of the name
  noextglob: true, // `+(`, `@(`, `!(` are characters of names
  posix: true, // `[!a]` negates a class, `[[:alpha:]]` is a POSIX class
  windows: false,
  fastpaths: false, // the shortcut for patterns without wildcards mistakes an escaped backslash (`\\,` matched `,`)
  literalBrackets: false, // `[ab]` is a class only (picomatch would also match the text `[ab]`)
};

/**
 * One glob as a regular expression over a whole '/'-separated path. dotAll: `**`
 * crosses names holding a newline too, an ordinary character in a name.
 */
export function globToRegExp(glob: string): RegExp {
  if (glob === '') return /^$/s;
  const regex = picomatch.makeRe(literalParts(glob), PICOMATCH);
  return new RegExp(regex.source, `${regex.flags.replace('s', '')}s`);
}

/** A matcher of one path component, or 'any' where a component cannot be matched alone (`**`, a class or braces across a slash). */
function componentMatcher(part: string): RegExp | 'any' {
  if (part.includes('**') || unclosedClass(part) || !balancedBraces(part) || /(^|[^\\])(\\\\)*\\$/.test(part)) return 'any';
  return globToRegExp(part);
}

function unclosedClass(part: string): boolean {
  return /\[[^\]]*$/.test(part);
}

function balancedBraces(text: string): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\') i++;
    else if (c === '{') depth++;
    else if (c === '}' && --depth < 0) return false;
  }
  return depth === 0;
}

/**
 * The glob with the characters picomatch would give a meaning this syntax does
 * not escaped: `( ) | + ^ $ @ !` (regular-expression or extglob syntax to
 * picomatch: `+` after a class would repeat it), an
 * escaped or lone trailing backslash (as the class `[\\]`: picomatch reads `\\\\`
 * wrongly), and every brace when the braces do not pair up (picomatch would make
 * such a pattern match nothing).
 */
function literalParts(glob: string): string {
  const braces = balancedBraces(glob);
  let out = '';
  let inClass = false;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (inClass) {
      out += c;
      if (c === '\\' && i + 1 < glob.length) out += glob[++i] as string;
      else if (c === ']') inClass = false;
    } else if (c === '\\') {
      // An escaped backslash (or a lone one at the end) as a class: picomatch mistakes `\\\\` for one.
      const next = glob[i + 1];
      i++;
      out += next === undefined || next === '\\' ? '[\\\\]' : `\\${next}`;
    } else if (c === '[' && glob.indexOf(']', i + 2) >= 0) {
      // A class: `]` right after `[` (or `[!`, `[^`) is a member, not its end.
      inClass = true;
      out += c;
      if (glob[i + 1] === '!' || glob[i + 1] === '^') out += glob[++i] as string;
      if (glob[i + 1] === ']') out += glob[++i] as string;
    } else if ('()|+^$@!'.includes(c) || (!braces && (c === '{' || c === '}'))) {
      out += `\\${c}`;
    } else {
      out += c;
    }
  }
  return out;
}
