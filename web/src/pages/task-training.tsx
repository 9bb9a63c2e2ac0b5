import type { ComponentChildren } from 'preact';
import { useMemo } from 'preact/hooks';
import type { Task, TaskEvent, TaskMetricsView } from '../../../src/api/tasks.js';
import type { CurrentRoundView } from '../../../src/training/training-api.js';
import { LineChart, type ChartSeries } from '../components/chart.js';
import { Pending, StatusBadge } from '../components/ui.js';
import { ago, dateTime, duration, num, obj } from '../format.js';
import { RoundClients, roundClients, samplingByRound } from './round-clients.js';

type Sample = TaskMetricsView['items'][number];
type Round = NonNullable<TaskMetricsView['rounds']>[number];

/** A metric as one number: numbers as they are, arrays (the original client's loss[]) by their last value. */
function scalar(v: unknown): number | null {
  if (Array.isArray(v)) return scalar(v[v.length - 1]);
  return num(v);
}

const LOSS_KEYS = ['loss', 'current_loss', 'train_loss'];
const ACC_KEYS = ['accuracy', 'current_accuracy', 'val_accuracy', 'acc'];
const pick = (m: Record<string, unknown>, keys: string[]) => {
  for (const k of keys) {
    const v = scalar(m[k]);
    if (v !== null) return v;
  }
  return null;
};
const pct = (v: number) => `${(v <= 1 ? v * 100 : v).toFixed(1)}%`;

export interface Curve {
  axis: 'Round' | 'Epoch' | 'Step';
  x: number[];
  loss: (number | null)[];
  accuracy: (number | null)[];
  /** Distributed training on train_mnist: the global model on digits no rank trained on. */
  heldoutLoss?: (number | null)[];
  heldoutAccuracy?: (number | null)[];
}

const hasAny = (xs: (number | null)[] | undefined) => !!xs?.some((v) => v !== null);

/** Per round, from the round journal: the ranks' metrics weighted by samples, and held-out figures. */
export function roundCurve(rounds: Round[]): Curve | null {
  const closed = rounds
    .filter((r) => r.metrics && Object.keys(r.metrics).length)
    .sort((a, b) => a.round - b.round);
  if (!closed.length) return null;
  const m = closed.map((r) => obj(r.metrics));
  return {
    axis: 'Round',
    x: closed.map((r) => r.round),
    loss: m.map((x) => pick(x, LOSS_KEYS)),
    accuracy: m.map((x) => pick(x, ACC_KEYS)),
    heldoutLoss: m.map((x) => num(x.heldout_loss)),
    heldoutAccuracy: m.map((x) => num(x.heldout_accuracy)),
  };
}

/**
 * Loss and accuracy per round from the sampled progress reports (the mean over ranks of each
 * rank's last report in the round), else per epoch, else along the loss[] history the
 * original client reports. Null when the task reports neither loss nor accuracy.
 */
export function trainingCurve(history: Sample[], latest: unknown): Curve | null {
  // History is sampled (every 2 s at most): the latest report adds the newest epoch.
  const last = history.at(-1);
  const items: Sample[] =
    latest && typeof latest === 'object' && !Array.isArray(latest)
      ? [
          ...history,
          { at: '', rank: last?.rank ?? 0, attempt: 0, round: null, progress: 0, metrics: obj(latest) },
        ]
      : history;
  const group = (key: (s: Sample) => number | null, axis: Curve['axis']): Curve | null => {
    const byKey = new Map<number, Map<number, Record<string, unknown>>>();
    for (const s of items) {
      const k = key(s);
      if (k === null) continue;
      if (!byKey.has(k)) byKey.set(k, new Map());
      (byKey.get(k) as Map<number, Record<string, unknown>>).set(s.rank, s.metrics);
    }
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
    return hasAny(curve.loss) || hasAny(curve.accuracy) ? curve : null;
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

const lastOf = (xs: (number | null)[] | undefined) =>
  [...(xs ?? [])].reverse().find((v) => v !== null) ?? null;

/** The training section of a task page: current round, chart, rounds table. */
export function TrainingChart(props: {
  task: Task;
  metrics: TaskMetricsView | undefined;
  current: CurrentRoundView | undefined;
  /** The task's events: the sampling of its rounds, when it samples. */
  events: readonly TaskEvent[] | undefined;
  missing: boolean;
}) {
  const { task, metrics, current } = props;
  const rounds = metrics?.rounds ?? [];
  const curve = useMemo(
    () => roundCurve(rounds) ?? trainingCurve(metrics?.items ?? [], metrics?.latest ?? task.metrics),
    [metrics, task.metrics],
  );
  const series = useMemo(() => {
    if (!curve) return null;
    const s: { spec: ChartSeries; ys: (number | null)[] }[] = [
      { spec: { label: 'loss', color: '#d9822b' }, ys: curve.loss },
      { spec: { label: 'accuracy', color: '#3b6fd1', right: true }, ys: curve.accuracy },
    ];
    if (hasAny(curve.heldoutLoss))
      s.push({
        spec: { label: 'held-out loss', color: '#d9822b', dash: [6, 4] },
        ys: curve.heldoutLoss ?? [],
      });
    if (hasAny(curve.heldoutAccuracy))
      s.push({
        spec: { label: 'held-out accuracy', color: '#3b6fd1', right: true, dash: [6, 4] },
        ys: curve.heldoutAccuracy ?? [],
      });
    return { specs: s.map((x) => x.spec), ys: s.map((x) => x.ys) };
  }, [curve]);
  const total = num(obj(task.config).rounds);

  if (props.missing && !curve)
    return (
      <Pending>
        This server does not record metric history (GET /api/tasks/{'{id}'}/metrics); the chart appears once
        it does.
      </Pending>
    );
  const loss = lastOf(curve?.loss);
  const acc = lastOf(curve?.accuracy);
  const held = lastOf(curve?.heldoutAccuracy);
  return (
    <>
      {current && current.state === 'open' && task.status !== 'completed' ? (
        <p class="round-now" data-testid="current-round">
          Round {current.round} of {current.rounds} open: {current.accepted_ranks.length} of{' '}
          {current.world_size} updates in (quorum {current.quorum});{' '}
          {Date.parse(current.deadline_at) > Date.now()
            ? `deadline in ${duration((Date.parse(current.deadline_at) - Date.now()) / 1000)}`
            : 'deadline passed'}
        </p>
      ) : null}
      {curve && series ? (
        <>
          <p class="chart-summary" data-testid="training-summary">
            {curve.axis === 'Round' && total
              ? `${curve.x.length} of ${total} rounds`
              : `${curve.x.length} ${curve.axis.toLowerCase()}${curve.x.length === 1 ? '' : 's'}`}
            {loss !== null ? ` · loss ${loss.toFixed(4)}` : ''}
            {acc !== null ? ` · accuracy ${pct(acc)}` : ''}
            {held !== null ? ` · held-out accuracy ${pct(held)}` : ''}
          </p>
          <LineChart
            title={`Loss and accuracy per ${curve.axis.toLowerCase()}`}
            x={curve.x}
            ys={series.ys}
            xLabel={curve.axis}
            series={series.specs}
          />
        </>
      ) : (
        <p class="muted">
          {task.status === 'pending'
            ? 'The chart starts when the ranks report loss or accuracy.'
            : total
              ? 'The chart starts when the first round closes.'
              : 'This task has reported no loss or accuracy.'}
        </p>
      )}
      {obj(task.config).mode === 'async' ? <Versions rounds={rounds} /> : null}
      {rounds.length ? <RoundsTable rounds={rounds} events={props.events ?? []} /> : null}
    </>
  );
}

/** Async tasks: each version published, with a histogram of its updates' staleness. */
function Versions({ rounds }: { rounds: Round[] }) {
  const rows = rounds
    .map((r) => ({ round: r.round, staleness: obj(r.metrics).staleness }))
    .filter((r): r is { round: number; staleness: number[] } => Array.isArray(r.staleness))
    .sort((a, b) => b.round - a.round);
  if (!rows.length) return <p class="muted">No version published yet.</p>;
  const widest = Math.max(...rows.flatMap((r) => r.staleness));
  return (
    <FoldedTable
      class="versions"
      open
      testId="async-versions"
      summary={`Versions published (${rows.length}): staleness of the updates that made each`}
      head={['Version', 'Updates', `Staleness (τ = 0 … ${widest})`]}
    >
      {rows.map((r) => {
        const counts = Array.from(
          { length: widest + 1 },
          (_, t) => r.staleness.filter((s) => s === t).length,
        );
        const top = Math.max(...counts);
        return (
          <tr key={r.round} data-testid={`version-${r.round}`}>
            <td>{r.round}</td>
            <td>{r.staleness.length}</td>
            <td>
              <span class="histogram" role="img" aria-label={counts.map((c, t) => `τ=${t}: ${c}`).join(', ')}>
                {counts.map((c, t) => (
                  <span
                    key={t}
                    class="bar"
                    title={`τ=${t}: ${c}`}
                    style={{ height: `${top ? (100 * c) / top : 0}%` }}
                  />
                ))}
              </span>
            </td>
          </tr>
        );
      })}
    </FoldedTable>
  );
}

function RoundsTable({ rounds, events }: { rounds: Round[]; events: readonly TaskEvent[] }) {
  const rows = [...rounds].sort((a, b) => b.round - a.round);
  const sampling = useMemo(() => samplingByRound(events), [events]);
  return (
    <FoldedTable
      class="rounds"
      open={rows.length <= 10}
      responsive
      summary={`Rounds (${rows.length})`}
      head={['Round', 'State', 'Updates', 'Trained by', 'Loss', 'Accuracy', 'Held-out accuracy', 'Closed']}
    >
      {rows.map((r) => {
        const m = obj(r.metrics);
        const loss = pick(m, LOSS_KEYS);
        const acc = pick(m, ACC_KEYS);
        const held = num(m.heldout_accuracy);
        return (
          <tr key={r.round} data-testid={`round-${r.round}`}>
            <td data-label="Round">{r.round}</td>
            <td data-label="State">
              <StatusBadge status={r.state} />
            </td>
            <td data-label="Updates">{r.num_updates}</td>
            <td data-label="Trained by">
              <RoundClients
                clients={roundClients(r.trained ?? [], r.state === 'open', sampling.get(r.round))}
              />
            </td>
            <td data-label="Loss">{loss === null ? '—' : loss.toFixed(4)}</td>
            <td data-label="Accuracy">{acc === null ? '—' : pct(acc)}</td>
            <td data-label="Held-out accuracy">{held === null ? '—' : pct(held)}</td>
            <td data-label="Closed" title={dateTime(r.closed_at)}>
              {r.closed_at ? ago(r.closed_at) : '—'}
            </td>
          </tr>
        );
      })}
    </FoldedTable>
  );
}

/** A table under a summary line that folds it away; `responsive`: cards on narrow screens. */
function FoldedTable(props: {
  class: string;
  open: boolean;
  testId?: string;
  responsive?: boolean;
  summary: string;
  head: string[];
  children: ComponentChildren;
}) {
  return (
    <details class={props.class} open={props.open} data-testid={props.testId}>
      <summary>{props.summary}</summary>
      <div class="table-wrap">
        <table class={props.responsive ? 'table responsive' : 'table'}>
          <thead>
            <tr>
              {props.head.map((h) => (
                <th key={h} scope="col">
                  {h}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>{props.children}</tbody>
        </table>
      </div>
    </details>
  );
}
