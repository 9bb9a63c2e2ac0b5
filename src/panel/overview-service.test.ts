import { describe, expect, it } from 'vitest';
import { farmMetrics } from './overview-service.js';

const row = (
  id: string,
  r: Partial<Record<'cpu_info' | 'ram_info' | 'gpu_info' | 'utilization', unknown>>,
) => ({
  id,
  cpu_info: JSON.stringify(r.cpu_info ?? {}),
  ram_info: JSON.stringify(r.ram_info ?? {}),
  gpu_info: r.gpu_info === undefined ? null : JSON.stringify(r.gpu_info),
  utilization: r.utilization === undefined ? null : JSON.stringify(r.utilization),
});

describe('farm metrics (the seed metrics object for the whole farm)', () => {
  it('averages heartbeat utilization and lists every GPU by client', () => {
    const m = farmMetrics(
      [
        row('a', {
          utilization: {
            cpu_utilization: 40,
            ram_utilization: 50,
            gpu_utilization: [{ id: 0, utilization: 90, memory_used: 1000 }],
          },
        }),
        row('b', { utilization: { cpu_utilization: 60, ram_utilization: 70 } }),
      ],
      3,
      2,
    );
    expect(m).toEqual({
      cpu_utilization: 50,
      ram_utilization: 60,
      gpu_utilization: [{ id: 'a:0', utilization: 90, memory_used: 1000 }],
      active_tasks: 3,
      connected_clients: 2,
    });
  });

  it("falls back on the original client's system info: per-core usage, ram.percent, GPU load in 0..1", () => {
    const m = farmMetrics(
      [
        row('old', {
          cpu_info: { usage_percent: [10, 30] },
          ram_info: { percent: 25 },
          gpu_info: [{ id: 1, load: 0.5, memory: { total: 8000, used: 2000 } }],
        }),
      ],
      0,
      1,
    );
    expect(m.cpu_utilization).toBe(20);
    expect(m.ram_utilization).toBe(25);
    expect(m.gpu_utilization).toEqual([{ id: 'old:1', utilization: 50, memory_used: 2000 }]);
  });

  it('says unknown (null), not 0%, when nobody reported, and ignores nonsense', () => {
    expect(farmMetrics([], 0, 0)).toMatchObject({
      cpu_utilization: null,
      ram_utilization: null,
      gpu_utilization: [],
    });
    const m = farmMetrics(
      [row('x', { utilization: { cpu_utilization: 'high', ram_utilization: 250 } })],
      0,
      1,
    );
    expect(m.cpu_utilization).toBeNull();
    expect(m.ram_utilization).toBe(100);
  });
});
