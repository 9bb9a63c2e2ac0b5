/**
 * Asynchronous buffered aggregation (FedBuff, Nguyen et al. 2022), the pure part: how much an
 * update counts given its staleness τ (versions published since the one it started from), and
 * the FedAvg weight each update of a buffer carries. See docs/training.md, "Asynchronous mode".
 */
import type { AsyncSettings, TrainingConfig } from '../training-config.js';

/**
 * s(τ), the staleness weighting:
 * - constant: 1;
 * - polynomial: (1 + τ)^-a;
 * - hinge: 1 while τ <= b, then 1 / (a (τ - b) + 1).
 */
export function stalenessWeight(s: Pick<AsyncSettings, 'staleness' | 'a' | 'b'>, tau: number): number {
  switch (s.staleness) {
    case 'constant':
      return 1;
    case 'polynomial':
      return (1 + tau) ** -s.a;
    case 'hinge':
      return tau <= s.b ? 1 : 1 / (s.a * (tau - s.b) + 1);
  }
}

/**
 * The FedAvg weight of an update folded into round `bufferRound` that started in round
 * `round`: its sample count, times s(τ) in async mode (τ = bufferRound - round).
 */
export function updateWeight(
  config: Pick<TrainingConfig, 'async'>,
  bufferRound: number,
  u: { round: number; numSamples: number },
): number {
  if (!config.async) return u.numSamples;
  return u.numSamples * stalenessWeight(config.async, bufferRound - u.round);
}

/**
 * The next version from the weighted mean ū of a buffer: old + server_lr (ū - old), that is
 * the FedAvg of [old, ū] with weights [1 - server_lr, server_lr]. Null when ū is the version
 * itself (server_lr 1, or no version yet: the first one starts from the workers' seed).
 */
export function serverMix(
  serverLr: number,
  oldPath: string | null,
  meanPath: string,
): { path: string; weight: number }[] | null {
  if (serverLr >= 1 || oldPath === null) return null;
  return [
    { path: oldPath, weight: 1 - serverLr },
    { path: meanPath, weight: serverLr },
  ];
}
