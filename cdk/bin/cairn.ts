// The CDK app: `npx cdk synth -c env=dev`. One environment per run (see cdk/README.md).
import { CairnError } from '../../agent/core/errors.ts';
import { buildApp } from '../lib/app.ts';

try {
  const { app } = buildApp(undefined);
  app.synth();
} catch (error) {
  if (error instanceof CairnError) {
    process.stderr.write(`cairn cdk: ${error.message}\n${error.hint === undefined ? '' : `hint: ${error.hint}\n`}`);
    process.exit(2);
  }
  throw error;
}
