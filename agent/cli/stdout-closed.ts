import { ExitCode } from '../core/errors.ts';

/**
 * A reader that goes away before the output ends (`cairn snapshots | head`): the command stops
 * quietly with 141, as a program killed by SIGPIPE does in a shell. Node ignores SIGPIPE, and an
 * EPIPE nobody handles ended the process with a stack trace. A command that watches its own output
 * handles it instead (dump: files/output-writer.ts, which reports the output cut short).
 */
export function exitQuietlyWhenStdoutCloses(): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    if (process.stdout.listenerCount('error') > 1) return;
    process.exit(ExitCode.outputClosed);
  });
}
