/**
 * Path patterns for --exclude and --include. `*` and `?` stay within one path
 * component, `**` crosses them, `[...]` is a class. A pattern without a slash
 * matches any component's name; with one, it matches the whole relative path
 * (a leading slash anchors it at the snapshot root). A name that is not UTF-8 is
 * matched by its display form (each invalid sequence as U+FFFD).
 */
export class PathMatcher {
  private readonly patterns: Array<{ regex: RegExp; byName: boolean; parts: string[] }>;

  constructor(patterns: string[]) {
    // Patterns are taken as written: spaces are ordinary characters of names (issue 20).
    this.patterns = patterns
      .filter((p) => p.length > 0)
      .map((p) => {
        const trimmed = p.replace(/\/+$/, '');
        const byName = !trimmed.includes('/');
        const anchored = trimmed.replace(/^\/+/, '');
        return { regex: globToRegExp(anchored), byName, parts: anchored.split('/') };
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
   * pattern only below directories its leading components match (`**` and
   * classes that hold a slash are taken to match anything).
   */
  mayMatchBelow(dirRel: string): boolean {
    const dir = dirRel.split('/');
    return this.patterns.some(({ byName, parts }) => {
      if (byName) return true;
      for (let i = 0; i < dir.length; i++) {
        const part = parts[i];
        if (part === undefined) return true; // the pattern matched an ancestor: everything below is covered
        if (part.includes('**') || /\[[^\]]*$/.test(part)) return true;
        if (!globToRegExp(part).test(dir[i] as string)) return false;
      }
      return true;
    });
  }

  /** True when the path or one of its ancestors matches (a matched directory covers its subtree). */
  matchesSelfOrAncestor(relPath: string): boolean {
    const parts = relPath.split('/');
    for (let i = 1; i <= parts.length; i++) {
      if (this.matches(parts.slice(0, i).join('/'))) return true;
    }
    return false;
  }
}

export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          out += '(?:.*/)?';
        } else {
          out += '.*';
        }
      } else {
        out += '[^/]*';
      }
    } else if (c === '?') {
      out += '[^/]';
    } else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) {
        out += '\\[';
      } else {
        const body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        out += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
        i = end;
      }
    } else {
      out += c.replace(/[.+^${}()|\\]/g, '\\$&');
    }
  }
  // dotAll: `**` crosses names holding a newline too, an ordinary character in a name.
  return new RegExp(`^${out}$`, 's');
}
