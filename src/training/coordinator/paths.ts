import { join, resolve } from 'node:path';

/** Where a training task's files live (absolute; MODEL_CACHE_DIR and CHECKPOINT_DIR may be relative). */
export class TrainingPaths {
  private readonly cache: string;
  private readonly checkpoints: string;

  constructor(modelCacheDir: string, checkpointDir: string) {
    this.cache = resolve(modelCacheDir);
    this.checkpoints = resolve(checkpointDir);
  }

  taskDir(taskId: number): string {
    return join(this.cache, `task-${taskId}`);
  }

  /** Uploads in flight (same filesystem as their final place, so the rename is atomic). */
  incoming(taskId: number): string {
    return join(this.taskDir(taskId), 'incoming');
  }

  /** Parts of resumable (tus) uploads: kept across restarts, unlike `incoming/`. */
  resumablePart(taskId: number, uploadId: string): string {
    return join(this.taskDir(taskId), 'resumable', `${uploadId}.part`);
  }

  roundDir(taskId: number, round: number): string {
    return join(this.taskDir(taskId), `round-${round}`);
  }

  update(taskId: number, round: number, rank: number, attempt: number): string {
    return join(this.roundDir(taskId, round), `rank-${rank}-attempt-${attempt}.safetensors`);
  }

  /** The global model round `round` starts from (the aggregate of round - 1). */
  global(taskId: number, round: number): string {
    return join(this.taskDir(taskId), `global-round-${round}.safetensors`);
  }

  checkpointDir(taskId: number): string {
    return join(this.checkpoints, `task-${taskId}`);
  }

  checkpoint(taskId: number, round: number): string {
    return join(this.checkpointDir(taskId), `round-${round}.safetensors`);
  }
}
