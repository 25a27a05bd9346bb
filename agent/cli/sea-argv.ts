import { realpathSync } from 'node:fs';

/**
 * process.argv as the CLI expects it in the single executable: [program, script, ...arguments].
 *
 * The commands that start cairn again (the WAL daemon, a restored server's restore_command, the
 * agent's nested binlog push) run [process.execPath, resolve(process.argv[1]), ...]: node and the
 * script when cairn runs on Node. In the single executable Node sets argv[1] to the name it was
 * called by ("cairn" when found on PATH, which resolve() would turn into a file in the working
 * directory), so argv[1] becomes the binary itself; and a child started that way gets its own
 * path as its first argument, which is dropped. (A module of its own so that a test can import it
 * without starting the CLI.)
 */
export function seaArgv(argv: readonly string[], execPath: string): string[] {
  const rest = argv.slice(2);
  const first = rest[0];
  if (first !== undefined && first.startsWith('/') && sameFile(first, execPath)) rest.shift();
  return [execPath, execPath, ...rest];
}

function sameFile(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false; // not a file: an ordinary argument
  }
}
