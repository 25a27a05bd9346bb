/** One CloudWatch embedded-metric-format record, as Powertools prints it. */
export interface EmfRecord {
  _aws: { CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string; Unit: string }> }> };
  [field: string]: unknown;
}

/**
 * Runs fn while copying stdout, and returns the embedded-metric-format
 * records printed meanwhile (what CloudWatch would turn into metrics): the
 * handlers publish their metrics only that way.
 */
export async function captureMetrics<T>(fn: () => Promise<T>): Promise<{ value: T | undefined; error: unknown; metrics: EmfRecord[] }> {
  const printed: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = (chunk: string | Uint8Array, ...rest: never[]) => {
    printed.push(String(chunk));
    return write(chunk, ...rest);
  };
  let value: T | undefined;
  let error: unknown;
  try {
    value = await fn();
  } catch (caught) {
    error = caught;
  } finally {
    process.stdout.write = write;
  }
  // The test runner may print on the same line first: an EMF record runs from its own '{"_aws"' to the line's end.
  const metrics = printed
    .join('')
    .split('\n')
    .flatMap((line) => (line.includes('{"_aws"') ? [JSON.parse(line.slice(line.indexOf('{"_aws"'))) as EmfRecord] : []));
  return { value, error, metrics };
}
