// Loaded with `node --import` (NODE_OPTIONS) into the agent's processes on the e2e "host"
// (./harness.ts): installs the AWS call sink that the real bundled agent's SDK clients report to
// (agent/core/aws-call-record.ts, whose setAwsCallSink sets the same global), appending one JSON
// line per command to the file CAIRN_RECORD_AWS_CALLS names. The principal is the plan's host, for
// the operation the SSM document was run with (its SSM_* parameters). The record holds no secret
// (the recorder's allow-list), and one short line per append keeps concurrent processes' lines whole.
// Plain JavaScript, importing nothing of Cairn: every node start on the host loads it, and a
// TypeScript preload would cost each one the type stripper's start.
import { appendFileSync } from 'node:fs';

const file = process.env.CAIRN_RECORD_AWS_CALLS;
if (file) {
  const host = { principal: 'host', planId: process.env.SSM_planId ?? '', operation: process.env.SSM_operation ?? '' };
  globalThis[Symbol.for('cairn.test.aws-call-sink')] = (record) => appendFileSync(file, `${JSON.stringify({ ...host, ...record })}\n`);
}
