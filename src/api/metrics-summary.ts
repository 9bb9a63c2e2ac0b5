/** Metrics on one line, as the worker's display and `ai-farm tasks` print them. */

/** A few numeric metrics, for one line: `loss=0.231 accuracy=0.91 epoch=3`. */
export function summarizeMetrics(metrics: Record<string, unknown> | undefined, max = 3): string {
  if (!metrics) return '';
  const preferred = ['current_loss', 'loss', 'accuracy', 'current_epoch', 'epoch'];
  const keys = [
    ...preferred.filter((k) => k in metrics),
    ...Object.keys(metrics).filter((k) => !preferred.includes(k)),
  ];
  const parts: string[] = [];
  for (const k of keys) {
    const v = metrics[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) continue;
    parts.push(`${k}=${Number.isInteger(v) ? v : Number(v.toPrecision(4))}`);
    if (parts.length >= max) break;
  }
  return parts.join(' ');
}
