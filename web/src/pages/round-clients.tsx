import type { RoundUpdateView, TaskEvent } from '../../../src/api/tasks.js';
import { Link } from '../components/ui.js';
import { num, obj } from '../format.js';

/**
 * One client of a round: trained (its update accepted), or sampled and not (yet) delivering:
 * waiting while the round is open, late (reported so) or missing once it closed.
 */
export interface RoundClient {
  client_id: string;
  rank: number | null;
  state: 'trained' | 'waiting' | 'late' | 'missing';
}

/** What a task's events say of one round's sampling (`round_sampled`, `update_late`). */
interface Sampling {
  sampled: { client_id: string; rank: number | null }[];
  late: Set<string>;
}

/** Per round, the clients sampled and those reported late, from the task's events. */
export function samplingByRound(events: readonly TaskEvent[]): Map<number, Sampling> {
  const out = new Map<number, Sampling>();
  const of = (round: number): Sampling => {
    let s = out.get(round);
    if (!s) out.set(round, (s = { sampled: [], late: new Set() }));
    return s;
  };
  for (const e of events) {
    const d = obj(e.data);
    const round = num(d.round);
    if (round === null) continue;
    if (e.kind === 'round_sampled' && Array.isArray(d.sampled)) {
      of(round).sampled = d.sampled
        .map((c) => obj(c))
        .filter((c) => typeof c.client_id === 'string')
        .map((c) => ({ client_id: c.client_id as string, rank: num(c.rank) }));
    } else if (e.kind === 'update_late' && typeof d.client_id === 'string') of(round).late.add(d.client_id);
  }
  return out;
}

/**
 * Who trained in a round: without sampling, the clients whose updates were accepted; with it,
 * every client sampled (trained, waiting, late or missing), then any other whose update was accepted.
 */
export function roundClients(
  trained: readonly RoundUpdateView[],
  open: boolean,
  sampling?: Sampling,
): RoundClient[] {
  const accepted: RoundClient[] = trained.map((u) => ({
    client_id: u.client_id,
    rank: u.rank,
    state: 'trained',
  }));
  if (!sampling?.sampled.length) return accepted;
  const took = new Set(trained.map((u) => u.client_id));
  const sampled = new Set(sampling.sampled.map((c) => c.client_id));
  return [
    ...sampling.sampled.map((c): RoundClient => ({
      ...c,
      state: took.has(c.client_id)
        ? 'trained'
        : sampling.late.has(c.client_id)
          ? 'late'
          : open
            ? 'waiting'
            : 'missing',
    })),
    ...accepted.filter((c) => !sampled.has(c.client_id)),
  ];
}

/** A round's clients, each linked to its page; the ones that did not deliver are marked. */
export function RoundClients({ clients }: { clients: readonly RoundClient[] }) {
  if (!clients.length) return <span class="muted">—</span>;
  return (
    <ul class="round-clients">
      {clients.map((c) => (
        <li key={c.client_id} class={`round-client round-client-${c.state}`} data-state={c.state}>
          <Link href={`/clients/${encodeURIComponent(c.client_id)}`}>{c.client_id}</Link>
          {c.rank !== null ? <span class="muted"> rank {c.rank}</span> : null}
          {c.state === 'trained' ? null : <span class="round-client-note"> {c.state}</span>}
        </li>
      ))}
    </ul>
  );
}
