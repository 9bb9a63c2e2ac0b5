import { readFileSync } from 'node:fs';

/** The parts of a V8 .cpuprofile this summary reads. */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  /** Self time by function (name, file, line), largest first. */
  functions: { name: string; where: string; ms: number; pct: number }[];
  /** Self time by where the code lives: a package, a src/ file, node internals, GC, idle. */
  areas: { area: string; ms: number; pct: number }[];
  /** Time in AI Farm's own functions including what they call (each counted once per stack). */
  inclusive: { name: string; where: string; ms: number; pct: number }[];
}

/** Where a script lives, shortened: "kysely", "src/scheduling/policy.ts", "node:internal". */
function areaOf(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  const src = url.search(/\/(src|bench|test)\//);
  if (src >= 0) return url.slice(src + 1).replace(/\?.*$/, '');
  if (url.startsWith('node:')) return 'node:internal';
  return url;
}

/** Self time per function and per area from a CPU profile. */
export function summariseProfile(file: string, top = 30): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number;
    // timeDeltas[i] is the time before sample i; the time after it is the next delta.
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  const fn = new Map<string, { name: string; where: string; ms: number }>();
  const area = new Map<string, number>();
  let total = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n) continue;
    total += ms;
    const name = n.callFrame.functionName || '(anonymous)';
    const where = `${areaOf(n.callFrame.url, name)}:${n.callFrame.lineNumber + 1}`;
    const key = `${name}@${where}`;
    const f = fn.get(key) ?? { name, where, ms: 0 };
    f.ms += ms;
    fn.set(key, f);
    const a = areaOf(n.callFrame.url, name);
    area.set(a, (area.get(a) ?? 0) + ms);
  }
  const pct = (ms: number) => Math.round((1000 * ms) / total) / 10;
  // Inclusive time: walk the call tree once, crediting a sample's time to every distinct
  // AI Farm function on its stack.
  const incl = new Map<string, { name: string; where: string; ms: number }>();
  const root = p.nodes[0];
  const stack: { id: number; keys: string[] }[] = root ? [{ id: root.id, keys: [] }] : [];
  for (let guard = 0; stack.length > 0 && guard < 10_000_000; guard++) {
    const { id, keys } = stack.pop() as { id: number; keys: string[] };
    const n = byId.get(id);
    if (!n) continue;
    let path = keys;
    if (/\/src\//.test(n.callFrame.url)) {
      const name = n.callFrame.functionName || '(anonymous)';
      const where = `${areaOf(n.callFrame.url, name)}:${n.callFrame.lineNumber + 1}`;
      const key = `${name}@${where}`;
      if (!keys.includes(key)) {
        path = [...keys, key];
        if (!incl.has(key)) incl.set(key, { name, where, ms: 0 });
      }
    }
    const ms = self.get(id) ?? 0;
    if (ms > 0) for (const k of path) (incl.get(k) as { ms: number }).ms += ms;
    for (const c of n.children ?? []) stack.push({ id: c, keys: path });
  }
  return {
    totalMs: Math.round(total),
    functions: [...fn.values()]
      .sort((a, b) => b.ms - a.ms)
      .slice(0, top)
      .map((f) => ({ ...f, ms: Math.round(f.ms), pct: pct(f.ms) })),
    areas: [...area.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([a, ms]) => ({ area: a, ms: Math.round(ms), pct: pct(ms) })),
    inclusive: [...incl.values()]
      .sort((a, b) => b.ms - a.ms)
      .slice(0, top)
      .map((f) => ({ ...f, ms: Math.round(f.ms), pct: pct(f.ms) })),
  };
}
