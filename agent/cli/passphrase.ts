import { readFile } from 'node:fs/promises';
import { CairnError, errorMessage } from '../core/errors.ts';

export interface PassphraseSource {
  env: NodeJS.ProcessEnv;
  passwordFile?: string | undefined;
  /** Ask twice (a new passphrase at init) when prompting. */
  confirm?: boolean;
}

/** CAIRN_PASSWORD, then --password-file, then a prompt on the terminal; never a command-line argument. */
export async function readPassphrase(source: PassphraseSource): Promise<string> {
  if (source.passwordFile) {
    let text: string;
    try {
      text = await readFile(source.passwordFile, 'utf8');
    } catch (error) {
      throw new CairnError('Cairn.Usage', `cannot read the password file ${source.passwordFile}: ${errorMessage(error)}`, { cause: error });
    }
    const passphrase = text.replace(/\r?\n$/, '');
    if (passphrase.length === 0) throw new CairnError('Cairn.Usage', `the password file ${source.passwordFile} is empty`);
    return passphrase;
  }
  const fromEnv = source.env.CAIRN_PASSWORD;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (!process.stdin.isTTY) {
    throw new CairnError('Cairn.Usage', 'no passphrase given', {
      hint: 'set CAIRN_PASSWORD, pass --password-file FILE, or run on a terminal to be asked',
    });
  }
  const first = await prompt('Repository passphrase: ');
  if (first.length === 0) throw new CairnError('Cairn.Usage', 'an empty passphrase is not allowed');
  if (source.confirm && (await prompt('Repeat the passphrase: ')) !== first) {
    throw new CairnError('Cairn.Usage', 'the two passphrases differ; nothing was written');
  }
  return first;
}

async function prompt(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = '';
      const onData = (chunk: Buffer): void => {
        for (const char of chunk.toString('utf8')) {
          if (char === '\r' || char === '\n') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            resolve(value);
            return;
          }
          if (char === '\u0003') {
            stdin.off('data', onData);
            reject(new CairnError('Cairn.Cancelled', 'cancelled at the passphrase prompt'));
            return;
          }
          if (char === '\u007f' || char === '\b') value = value.slice(0, -1);
          else value += char;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}
