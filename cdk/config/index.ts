import { dev } from './dev.ts';
import { prod } from './prod.ts';

/** Every environment the app knows, by the name given with `-c env=<name>`. Raw: validated by buildApp. */
export const environments: Readonly<Record<string, unknown>> = { dev, prod };
