import { useMemo } from 'preact/hooks';
import type { Task, TaskMetricsView } from '../../../src/api/tasks.js';
import { LineChart } from '../components/chart.js';
import { Pending } from '../components/ui.js';
import { num, obj } from '../format.js';

type Sample = TaskMetricsView['items'][number];

/** A metric as one number: numbers as they are, arrays (the original client's loss[]) by their last value. */
function scalar(v: unknown): number | null {
  if (Array.isArray(v)) return scalar(v[v.length - 1]);
  return num(v);
}

const LOSS_KEYS = ['current_loss', 'loss', 'train_loss'];
const ACC_KEYS = ['current_accuracy', 'accuracy', 'val_accuracy', 'acc'];
const pick = (m: Record<string, unknown>, keys: string[]) => {
  for (const k of keys) {
    const v = scalar(m[k]);
    if (v !== null) return v;
  }
  return null;
};

export interface Curve {
  axis: 'Round' | 'Epoch' | 'Step';
  x: number[];
  loss: (number | null)[];
  accuracy: (number | null)[];
}

/**
 * Loss and accuracy per round (distributed training: the mean over ranks of each rank's
 * last report in the round), else per epoch, else along the loss[] history the original
 * client reports. Null when the task reports neither loss nor accuracy.
 */
export function trainingCurve(items: Sample[], latest: unknown): Curve | null {
  const group = (key: (s: Sample) => number | null, axis: Curve['axis']): Curve | null => {
    const byKey = new Map<number, Map<number, Record<string, unknown>>>();
    for (const s of items) {
      const k = key(s);
      if (k === null) continue;
      if (!byKey.has(k)) byKey.set(k, new Map());
      (byKey.get(k) as Map<number, Record<string, unknown>>).set(s.rank, s.metrics);
    }
    if (byKey.size === 0) return null;
    const x = [...byKey.keys()].sort((a, b) => a - b);
    const mean = (k: number, keys: string[]) => {
      const vals = [...(byKey.get(k) as Map<number, Record<string, unknown>>).values()]
        .map((m) => pick(m, keys))
        .filter((v): v is number => v !== null);
      return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
    };
    const curve = {
      axis,
      x,
      loss: x.map((k) => mean(k, LOSS_KEYS)),
      accuracy: x.map((k) => mean(k, ACC_KEYS)),
    };
    return curve.loss.some((v) => v !== null) || curve.accuracy.some((v) => v !== null) ? curve : null;
  };
  const byRound = group((s) => s.round, 'Round');
  if (byRound) return byRound;
  const byEpoch = group((s) => num(s.metrics.current_epoch) ?? num(s.metrics.epoch), 'Epoch');
  if (byEpoch && byEpoch.x.length > 1) return byEpoch;
  const m = obj(latest);
  const lossArr = Array.isArray(m.loss) ? m.loss.map(num) : [];
  const accArr = Array.isArray(m.accuracy) ? m.accuracy.map(num) : [];
  const n = Math.max(lossArr.length, accArr.length);
  if (n > 1)
    return {
      axis: 'Step',
      x: Array.from({ length: n }, (_, i) => i + 1),
      loss: Array.from({ length: n }, (_, i) => lossArr[i] ?? null),
      accuracy: Array.from({ length: n }, (_, i) => accArr[i] ?? null),
    };
  return byEpoch;
}

/** The training chart of a task page, or a note saying where it will come from. */
export function TrainingChart({
  task,
  metrics,
  missing,
}: {
  task: Task;
  metrics: TaskMetricsView | undefined;
  missing: boolean;
}) {
  const curve = useMemo(
    () => trainingCurve(metrics?.items ?? [], metrics?.latest ?? task.metrics),
    [metrics, task.metrics],
  );
  const ys = useMemo(() => (curve ? [curve.loss, curve.accuracy] : []), [curve]);
  if (missing && !curve)
    return (
      <Pending>
        This server does not record metric history yet (GET /api/tasks/{'{id}'}/metrics); the chart appears
        once it does.
      </Pending>
    );
  if (!curve)
    return (
      <p class="muted">
        {task.status === 'pending'
          ? 'The chart starts when a client reports loss or accuracy.'
          : 'This task has reported no loss or accuracy.'}
      </p>
    );
  const lastLoss = [...curve.loss].reverse().find((v) => v !== null);
  const lastAcc = [...curve.accuracy].reverse().find((v) => v !== null);
  return (
    <>
      <p class="chart-summary" data-testid="training-summary">
        {curve.x.length} {curve.axis.toLowerCase()}
        {curve.x.length === 1 ? '' : 's'}
        {lastLoss !== undefined && lastLoss !== null ? ` · loss ${lastLoss.toFixed(4)}` : ''}
        {lastAcc !== undefined && lastAcc !== null
          ? ` · accuracy ${(lastAcc <= 1 ? lastAcc * 100 : lastAcc).toFixed(1)}%`
          : ''}
      </p>
      <LineChart
        title={`Loss and accuracy per ${curve.axis.toLowerCase()}`}
        x={curve.x}
        ys={ys}
        xLabel={curve.axis}
        series={[
          { label: 'loss', color: '#d9822b' },
          { label: 'accuracy', color: '#3b6fd1', right: true },
        ]}
      />
    </>
  );
}
