import type { SFNClient } from '@aws-sdk/client-sfn';
import { recordAwsCalls } from '../core/aws-call-record.ts';
import { errorMessage } from '../core/errors.ts';

/** Step Functions keeps at most 256 KiB of output and 256 characters of error name, 32 KiB of cause. */
const MAX_OUTPUT = 256 * 1024;
const MAX_CAUSE = 32_000;
/** Answers that mean the execution no longer waits for this task: it was stopped, timed out, or the token is stale. */
const GONE = new Set(['TaskTimedOut', 'TaskDoesNotExist', 'InvalidToken']);

export interface TaskReporterOptions {
  token: string;
  heartbeatSeconds: number;
  /** Called once when a heartbeat says the execution is gone: the agent must stop its work. */
  onGone: (reason: string) => void;
  onWarning: (message: string) => void;
  client?: SFNClient;
}

/**
 * The agent's side of the task-token protocol (docs/orchestration.md): a
 * heartbeat every HeartbeatSeconds/3, then exactly one SendTaskSuccess or
 * SendTaskFailure. A heartbeat answered TaskTimedOut, TaskDoesNotExist or
 * InvalidToken is how a stopped execution reaches the host.
 */
export class TaskReporter {
  private readonly options: TaskReporterOptions;
  private client: SFNClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private gone = false;
  private finished = false;

  constructor(options: TaskReporterOptions) {
    this.options = options;
    this.client = options.client;
  }

  /** The SDK loads on first use: every `cairn` start would pay for it otherwise (docs/architecture.md, start-up). */
  private async sfn(): Promise<{ client: SFNClient; sdk: typeof import('@aws-sdk/client-sfn') }> {
    const sdk = await import('@aws-sdk/client-sfn');
    this.client ??= recordAwsCalls(new sdk.SFNClient({}));
    return { client: this.client, sdk };
  }

  get executionGone(): boolean {
    return this.gone;
  }

  start(): void {
    const everyMs = Math.max(1000, Math.floor((this.options.heartbeatSeconds * 1000) / 3));
    void this.heartbeat();
    this.timer = setInterval(() => void this.heartbeat(), everyMs);
  }

  async heartbeat(): Promise<void> {
    if (this.gone || this.finished) return;
    try {
      const { client, sdk } = await this.sfn();
      await client.send(new sdk.SendTaskHeartbeatCommand({ taskToken: this.options.token }));
    } catch (error) {
      const name = error instanceof Error ? error.name : '';
      if (GONE.has(name)) {
        this.gone = true;
        this.stop();
        this.options.onGone(`the Step Functions execution no longer waits for this task (${name}): it was stopped or timed out`);
      } else {
        // A missed heartbeat is not fatal: the next one may get through before HeartbeatSeconds run out.
        this.options.onWarning(`heartbeat failed: ${errorMessage(error)}`);
      }
    }
  }

  async succeed(output: Record<string, unknown>): Promise<void> {
    this.stop();
    if (this.gone || this.finished) return;
    this.finished = true;
    let text = JSON.stringify(output);
    if (Buffer.byteLength(text) > MAX_OUTPUT) text = JSON.stringify({ ...output, engineMetadata: { truncated: true } });
    const { client, sdk } = await this.sfn();
    await client.send(new sdk.SendTaskSuccessCommand({ taskToken: this.options.token, output: text }));
  }

  async fail(code: string, cause: string): Promise<void> {
    this.stop();
    if (this.gone || this.finished) return;
    this.finished = true;
    const { client, sdk } = await this.sfn();
    await client.send(
      new sdk.SendTaskFailureCommand({ taskToken: this.options.token, error: code.slice(0, 256), cause: cause.slice(0, MAX_CAUSE) }),
    );
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
