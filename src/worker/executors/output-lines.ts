import type { Metrics } from './types.js';

/** What one line of a command's stdout means under the progress protocol. */
export type OutputLine =
  | { kind: 'progress'; progress: number; metrics?: Metrics | undefined }
  | { kind: 'result'; result: Record<string, unknown>; metrics?: Metrics | undefined }
  | { kind: 'log'; line: string };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The progress protocol, one stdout line at a time:
 * - `{"progress": 42.5, "metrics": {...}}` (progress a number 0-100, clamped; metrics optional)
 *   is a progress report;
 * - `{"result": {...}}` (optionally with metrics) sets the task's result;
 * - anything else is log output.
 */
export function parseOutputLine(line: string): OutputLine {
  const t = line.trim();
  if (!t.startsWith('{') || !t.endsWith('}')) return { kind: 'log', line };
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return { kind: 'log', line };
  }
  if (!isObject(v)) return { kind: 'log', line };
  const metrics = isObject(v.metrics) ? v.metrics : undefined;
  if (isObject(v.result)) return { kind: 'result', result: v.result, metrics };
  if (typeof v.progress === 'number' && Number.isFinite(v.progress)) {
    return { kind: 'progress', progress: Math.min(100, Math.max(0, v.progress)), metrics };
  }
  return { kind: 'log', line };
}

/**
 * Splits a stream of text into lines. A line longer than `maxLine` characters is cut
 * there, so a child that never prints a newline cannot grow the worker's memory.
 */
export class LineSplitter {
  private buf = '';

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLine = 1024 * 1024,
  ) {}

  push(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      this.onLine(this.buf.slice(0, nl).replace(/\r$/, ''));
      this.buf = this.buf.slice(nl + 1);
    }
    while (this.buf.length > this.maxLine) {
      this.onLine(this.buf.slice(0, this.maxLine));
      this.buf = this.buf.slice(this.maxLine);
    }
  }

  /** Emits what is left after the stream ended without a final newline. */
  end(): void {
    if (this.buf) this.onLine(this.buf);
    this.buf = '';
  }
}

/** Keeps the last `maxChars` characters of a stream, for error logs. */
export class TailBuffer {
  private text = '';

  constructor(private readonly maxChars = 4096) {}

  push(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.maxChars);
  }

  toString(): string {
    return this.text;
  }
}
