import { z } from 'zod';
import { defineEngineSpec } from './spec.ts';

/** Files and directories, walked by the archiver (agent/files/); the engine every snapshot without another is. */
export const filesSpec = defineEngineSpec({
  name: 'files',
  description: 'files and directories (the default): metadata kept, unchanged files not read again',
  schema: z.object({
    /** The absolute paths to back up. */
    paths: z
      .array(z.string().regex(/^\//, 'an absolute path'), { error: 'the files engine needs the paths to back up' })
      .min(1, 'the files engine needs the paths to back up'),
  }),
  // Paths are the backup command's arguments, not flags.
  flags: [],
  capabilities: { kind: 'physical', drill: true },
});
