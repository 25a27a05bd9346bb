import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

/** What the SSM document script (cdk/agent-document.sh) runs besides the agent. */
const DOCUMENT_TOOLS = ['bash', 'sh', 'sha256sum', 'cut', 'tr', 'mkdir', 'cp', 'chmod', 'mv', 'ln', 'rm', 'mktemp', 'uname', 'cat'];

/**
 * A directory holding links to the programs the document script uses, and nothing else: a PATH
 * on which there is no node (this machine has one in /usr/bin, so /usr/bin itself cannot be on it).
 */
export function pathWithoutNode(dir: string): string {
  const tools = join(dir, 'tools');
  mkdirSync(tools, { recursive: true });
  for (const tool of DOCUMENT_TOOLS) {
    const path = ['/usr/bin', '/bin'].map((d) => join(d, tool)).find((p) => existsSync(p));
    if (path && !existsSync(join(tools, tool))) symlinkSync(path, join(tools, tool));
  }
  return tools;
}
