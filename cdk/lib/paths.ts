import { fileURLToPath } from 'node:url';

/** The repository root (handler entries, the agent entry and the lock file are named from it). */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
