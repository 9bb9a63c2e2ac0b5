/**
 * The running FedAvg/FedProx sum of one round's updates, added as they are accepted (in worker
 * threads), so a round's close only divides. A float32 sum: one model of memory whatever the
 * number of ranks (error ~ N x 2^-24). A sum that missed an update is not trusted: the close
 * then aggregates the journal's files in one pass instead.
 */
import { createFedAvgSession, type FedAvgSession } from '../aggregation/runner.js';
import type { SafetensorsHeader } from '../safetensors/header.js';
import type { TrainingConfig } from '../training-config.js';
import type { AcceptedUpdate } from './run.js';

export class RoundSum {
  private session: FedAvgSession | null = null;
  /** Adds still running in the session's threads. */
  private adds: Promise<void>[] = [];
  /** False once an add failed or the sum was used up. */
  private sound = true;

  constructor(
    private readonly config: TrainingConfig,
    /** Reports an add that failed (the sum is then not trusted). */
    private readonly onFailure: (err: unknown, rank: number) => void,
  ) {}

  /** True when the strategy sums updates as they arrive. */
  get incremental(): boolean {
    const s = this.config.aggregation.strategy;
    return s === 'fedavg' || s === 'fedprox';
  }

  /**
   * Adds an accepted update with its FedAvg `weight` (staleness.ts updateWeight); `reference`:
   * the layout every update has (none yet, no sum).
   */
  add(u: AcceptedUpdate, weight: number, reference: SafetensorsHeader | null): void {
    if (!this.incremental || !this.sound || !reference) return;
    if (!this.session) {
      const mu = this.config.aggregation.mu;
      const made = createFedAvgSession(reference, {
        precision: 'float32',
        ...(mu === undefined ? {} : { mu }),
      });
      if (!made.ok) {
        this.sound = false;
        return;
      }
      this.session = made.session;
    }
    this.adds.push(
      // Uploads are scanned for NaN/Inf on arrival, before they are journaled.
      this.session.add(u.path, weight, { verified: true }).then(
        (r) => {
          if (r.ok) return;
          this.sound = false;
          this.onFailure(r, u.rank);
        },
        (err: unknown) => {
          // The session's thread ended (the server stopping, or the round dropped) while this
          // add was in flight: the sum is incomplete, rebuilt from the journal if needed again.
          this.sound = false;
          this.onFailure(err, u.rank);
        },
      ),
    );
  }

  /**
   * Writes the weighted mean of exactly `count` updates to `outPath` when the sum can be
   * trusted (every add done and in, no weight capped); false when it cannot, or failed.
   */
  async finish(
    count: number,
    outPath: string,
    metadata: Record<string, string>,
  ): Promise<{ ok: true; digest: string } | { ok: false }> {
    await Promise.allSettled(this.adds);
    if (!this.incremental || !this.session || !this.sound || this.session.count !== count)
      return { ok: false };
    const fin = await this.session.finish(outPath, metadata);
    return fin.ok ? { ok: true, digest: fin.digest } : { ok: false };
  }

  /** Stops the threads; the sum is used up (a later close reads the journal's files). */
  async close(): Promise<void> {
    this.sound = false;
    const session = this.session;
    this.session = null;
    await session?.close();
  }
}
