import cliProgress from 'cli-progress';

/** What the demo shows of a training task while it runs, from the HTTP API. */
export interface DemoSnapshot {
  status: string;
  rounds: number;
  /** Progress of each rank, percent of the whole task. */
  ranks: {
    rank: number;
    progress: number;
    status: string;
    /** The rank's latest training loss and accuracy, and the round they are from. */
    loss?: number | undefined;
    accuracy?: number | undefined;
    metricsRound?: number | undefined;
  }[];
  /** Closed rounds with their held-out accuracy when the server measured it. */
  closed: { round: number; heldoutAccuracy?: number; loss?: number }[];
}

/** The demo's terminal: bars on a TTY, plain lines otherwise. */
export interface DemoDisplay {
  line(text: string): void;
  update(s: DemoSnapshot): void;
  stop(): void;
}

/** The round a rank is in, from its progress (each round is an equal share of 100%). */
export function roundOf(progress: number, rounds: number): number {
  return Math.min(rounds, Math.floor((progress / 100) * rounds + 1e-9) + 1);
}

/** How far a rank is into its current round, percent. */
export function withinRound(progress: number, rounds: number): number {
  const done = ((progress / 100) * rounds - (roundOf(progress, rounds) - 1)) * 100;
  return Math.min(100, Math.max(0, done));
}

const fmt = (v: number | undefined, digits = 3) => (v === undefined ? '-' : v.toFixed(digits));
const pct = (v: number | undefined) => (v === undefined ? '-' : `${(v * 100).toFixed(1)}%`);

/** One bar per rank (its progress in the current round) and one for the rounds closed. */
export class BarsDisplay implements DemoDisplay {
  private readonly multi = new cliProgress.MultiBar(
    {
      format: '{label} |{bar}| {value}{unit} {info}',
      barsize: 30,
      hideCursor: true,
      clearOnComplete: false,
      stream: process.stdout,
      fps: 8,
    },
    cliProgress.Presets.shades_classic,
  );
  private readonly rankBars = new Map<number, cliProgress.SingleBar>();
  private roundsBar: cliProgress.SingleBar | undefined;
  private stopped = false;

  line(text: string): void {
    if (this.rankBars.size && !this.stopped) this.multi.log(`${text}\n`);
    else process.stdout.write(`${text}\n`);
  }

  update(s: DemoSnapshot): void {
    if (this.stopped) return;
    this.roundsBar ??= this.multi.create(s.rounds, 0, { label: 'rounds ', unit: `/${s.rounds}`, info: '' });
    const last = s.closed.at(-1);
    this.roundsBar.update(s.closed.length, {
      info: last ? `held-out accuracy after round ${last.round}: ${pct(last.heldoutAccuracy)}` : s.status,
    });
    for (const r of s.ranks) {
      let bar = this.rankBars.get(r.rank);
      if (!bar) {
        bar = this.multi.create(100, 0, { label: `rank ${r.rank}`, unit: '%', info: '' });
        this.rankBars.set(r.rank, bar);
      }
      const round = roundOf(r.progress, s.rounds);
      const from =
        r.metricsRound !== undefined && r.metricsRound !== round ? ` (round ${r.metricsRound})` : '';
      bar.update(Math.floor(withinRound(r.progress, s.rounds)), {
        info: `round ${round}/${s.rounds} ${r.status}: loss ${fmt(r.loss)} train accuracy ${pct(r.accuracy)}${from}`,
      });
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.multi.stop();
  }
}

/** Plain lines for pipes and logs: each rank's round as it starts, each round as it closes. */
export class LinesDisplay implements DemoDisplay {
  private readonly rankRound = new Map<number, number>();
  private closedSeen = 0;
  private status = '';

  constructor(private readonly out: (line: string) => void = (l) => console.log(l)) {}

  line(text: string): void {
    this.out(text);
  }

  update(s: DemoSnapshot): void {
    if (s.status !== this.status) {
      this.status = s.status;
      this.out(`task ${s.status}`);
    }
    for (const r of s.ranks) {
      const round = roundOf(r.progress, s.rounds);
      if (this.rankRound.get(r.rank) === round || r.progress >= 100) continue;
      this.rankRound.set(r.rank, round);
      this.out(`rank ${r.rank}: round ${round}/${s.rounds} (${r.progress.toFixed(0)}%)`);
    }
    for (const c of s.closed.slice(this.closedSeen)) {
      this.out(
        `round ${c.round}/${s.rounds} closed: held-out accuracy ${pct(c.heldoutAccuracy)}, loss ${fmt(c.loss)}`,
      );
    }
    this.closedSeen = Math.max(this.closedSeen, s.closed.length);
  }

  stop(): void {}
}
