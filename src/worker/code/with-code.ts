/**
 * Runs a task whose config names code (config.code, filled in by the server from
 * config.model or a pushed bundle): the code is fetched through the cache and unpacked into a
 * fresh working folder for this attempt, the task's executor runs there (config.cwd becomes
 * that folder, or a relative config.cwd inside it; AI_FARM_CODE_DIR names it), and the folder
 * is removed when the attempt ends. A training task's every round runs in the same folder.
 */
import { isAbsolute, join, relative } from 'node:path';
import type { TaskCodeRef } from '../../api/code.js';
import {
  PauseRelay,
  type Execution,
  type ExecutionContext,
  type ExecutionOutcome,
  type TrainingEvent,
} from '../executors/types.js';
import type { CodeCache, PreparedCode } from './code-cache.js';

/** config.code as the server writes it; a string is the problem. */
export function taskCodeRef(config: Record<string, unknown>): TaskCodeRef | null | string {
  const code = config.code;
  if (code === undefined) return null;
  if (!code || typeof code !== 'object' || Array.isArray(code)) return 'config.code must be an object';
  const c = code as Record<string, unknown>;
  if (typeof c.digest !== 'string') return 'config.code.digest must be a string';
  if (c.kind !== 'file' && c.kind !== 'folder') {
    return 'config.code.kind must be file or folder (was the task created through the API?)';
  }
  const ref: TaskCodeRef = { digest: c.digest, kind: c.kind, size: Number(c.size ?? 0) };
  if (typeof c.file_name === 'string') ref.file_name = c.file_name;
  return ref;
}

/** The task's config with the working folder in cwd and AI_FARM_CODE_DIR; a string is the problem. */
function configIn(config: Record<string, unknown>, dir: string): Record<string, unknown> | string {
  let cwd = dir;
  if (typeof config.cwd === 'string' && config.cwd !== '') {
    if (isAbsolute(config.cwd)) cwd = config.cwd;
    else {
      cwd = join(dir, config.cwd);
      const rel = relative(dir, cwd);
      if (rel.startsWith('..')) return `config.cwd ${config.cwd} leads out of the task's code folder`;
    }
  }
  const env = config.env && typeof config.env === 'object' && !Array.isArray(config.env) ? config.env : {};
  return { ...config, cwd, env: { ...env, AI_FARM_CODE_DIR: dir } };
}

/** Starts `start` once the task's code is in place. */
export function startWithCode(
  ref: TaskCodeRef,
  ctx: ExecutionContext,
  cache: CodeCache,
  start: (ctx: ExecutionContext) => Execution,
): Execution {
  return new CodeExecution(ref, ctx, cache, start);
}

class CodeExecution implements Execution {
  readonly done: Promise<ExecutionOutcome>;
  /** The task's executor, once the code is in place. */
  private readonly inner = new PauseRelay();
  private stopRequested = false;
  private readonly aborter = new AbortController();
  /** Training events that came while the code was being fetched, replayed in order. */
  private readonly early: TrainingEvent[] = [];

  constructor(
    private readonly ref: TaskCodeRef,
    private readonly ctx: ExecutionContext,
    private readonly cache: CodeCache,
    private readonly start: (ctx: ExecutionContext) => Execution,
  ) {
    this.done = this.run();
  }

  private async run(): Promise<ExecutionOutcome> {
    const { task } = this.ctx;
    let prepared: PreparedCode;
    try {
      prepared = await this.cache.prepare(this.ref, `task-${task.id}-${task.rank}-${task.attempt}`, {
        serverUrl: this.ctx.serverUrl,
        token: this.ctx.token,
        signal: this.aborter.signal,
      });
    } catch (err) {
      if (this.stopRequested) return { status: 'failed', stopped: true, error_log: 'stopped by request' };
      return { status: 'error', error_log: `task code ${this.ref.digest}: ${(err as Error).message}` };
    }
    try {
      if (this.stopRequested) return { status: 'failed', stopped: true, error_log: 'stopped by request' };
      const config = configIn(task.config, prepared.dir);
      if (typeof config === 'string') return { status: 'error', error_log: config };
      const inner = this.start({ ...this.ctx, task: { ...task, config } });
      this.inner.current = inner;
      for (const e of this.early.splice(0)) inner.deliver?.(e);
      return await inner.done;
    } finally {
      await prepared.cleanup();
    }
  }

  pause(): void {
    this.inner.pause();
  }

  resume(): void {
    this.inner.resume();
  }

  stop(graceMs?: number): Promise<ExecutionOutcome> {
    this.stopRequested = true;
    const inner = this.inner.current;
    if (inner) void inner.stop(graceMs);
    else this.aborter.abort();
    return this.done;
  }

  deliver(event: TrainingEvent): void {
    const inner = this.inner.current;
    if (inner) inner.deliver?.(event);
    else this.early.push(event);
  }
}
