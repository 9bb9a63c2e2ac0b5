import { describe, expect, it } from 'vitest';
import {
  byPriorityThenAge,
  fits,
  placeTasks,
  requirementClass,
  unschedulableReason,
  type ClientCapacity,
  type PendingTask,
} from './policy.js';
import { firstRoundSample } from '../training/sampling-config.js';

const client = (id: string, over: Partial<ClientCapacity> = {}): ClientCapacity => ({
  id,
  cpuCores: 4,
  ramGb: 16,
  gpuMemoryGb: [],
  freeSlots: 1,
  cordoned: false,
  ...over,
});
const task = (id: number, over: Partial<PendingTask> = {}): PendingTask => ({
  id,
  type: 'command',
  priority: 0,
  requirements: {},
  worldSize: 1,
  ...over,
});

describe('fits', () => {
  it('checks cores, RAM, GPU count and GPU memory', () => {
    const c = client('a', { cpuCores: 8, ramGb: 32, gpuMemoryGb: [8, 24] });
    expect(fits({ min_cpu_cores: 8, min_ram_gb: 32 }, c)).toBe(true);
    expect(fits({ min_cpu_cores: 9 }, c)).toBe(false);
    expect(fits({ min_ram_gb: 33 }, c)).toBe(false);
    expect(fits({ gpu_count: 2 }, c)).toBe(true);
    expect(fits({ gpu_count: 2, min_gpu_memory_gb: 16 }, c)).toBe(false);
    expect(fits({ gpu_count: 1, min_gpu_memory_gb: 16 }, c)).toBe(true);
    expect(fits({ min_gpu_memory_gb: 30 }, c)).toBe(false);
    expect(fits({ gpu_count: 1 }, client('cpu-only'))).toBe(false);
  });

  it('honours the task types a client declared', () => {
    const c = client('a', { taskTypes: ['command'] });
    expect(fits({}, c, 'command')).toBe(true);
    expect(fits({}, c, 'train_mnist')).toBe(false);
  });
});

describe('placeTasks', () => {
  it('runs higher priority first, then older', () => {
    const tasks = [task(3), task(1), task(2, { priority: 5 })].sort(byPriorityThenAge);
    expect(tasks.map((t) => t.id)).toEqual([2, 1, 3]);
    const p = placeTasks(tasks, [client('a'), client('b')]);
    expect(p.map((x) => x.taskId)).toEqual([2, 1]);
  });

  it('never places more than a client has slots for', () => {
    const p = placeTasks([task(1), task(2), task(3), task(4)], [client('a', { freeSlots: 3 })]);
    expect(p).toHaveLength(3);
    expect(new Set(p.map((x) => x.clientId))).toEqual(new Set(['a']));
  });

  it('sends a task only to a client that meets its requirements', () => {
    const p = placeTasks(
      [task(1, { requirements: { gpu_count: 1 } }), task(2, { requirements: { min_ram_gb: 64 } })],
      [client('cpu'), client('gpu', { gpuMemoryGb: [12] }), client('big', { ramGb: 128 })],
    );
    expect(p).toEqual([
      { taskId: 1, rank: 0, clientId: 'gpu' },
      { taskId: 2, rank: 0, clientId: 'big' },
    ]);
  });

  it('skips cordoned clients', () => {
    expect(placeTasks([task(1)], [client('a', { cordoned: true })])).toEqual([]);
  });

  it('places every rank of a gang on distinct clients, or none', () => {
    const gang = task(1, { worldSize: 3 });
    expect(placeTasks([gang], [client('a', { freeSlots: 3 }), client('b')])).toEqual([]);
    const p = placeTasks([gang, task(2)], [client('a'), client('b'), client('c'), client('d')]);
    expect(p.filter((x) => x.taskId === 1).map((x) => x.rank)).toEqual([0, 1, 2]);
    expect(new Set(p.filter((x) => x.taskId === 1).map((x) => x.clientId)).size).toBe(3);
    expect(p.find((x) => x.taskId === 2)).toBeDefined();
  });

  it('lets a smaller task pass a gang that cannot start yet', () => {
    const p = placeTasks([task(1, { worldSize: 4, priority: 9 }), task(2)], [client('a'), client('b')]);
    expect(p).toEqual([{ taskId: 2, rank: 0, clientId: 'a' }]);
  });

  it('re-places only the ranks asked for, away from excluded clients', () => {
    const p = placeTasks(
      [task(1, { worldSize: 3, ranks: [2], excludeClients: new Set(['a']) })],
      [client('a'), client('b')],
    );
    expect(p).toEqual([{ taskId: 1, rank: 2, clientId: 'b' }]);
  });

  it('spreads work to the least loaded client', () => {
    const p = placeTasks([task(1), task(2)], [client('a', { freeSlots: 1 }), client('b', { freeSlots: 3 })]);
    expect(p.map((x) => x.clientId)).toEqual(['b', 'b']);
  });
});

describe('unschedulableReason', () => {
  it('explains what is missing, and is null when a client fits', () => {
    const known = [client('a', { cpuCores: 8 })];
    expect(unschedulableReason(task(1, { requirements: { min_cpu_cores: 4 } }), known)).toBeNull();
    const why = unschedulableReason(task(1, { requirements: { min_cpu_cores: 64 } }), known);
    expect(why).toMatch(/64 CPU cores/);
    expect(why).toMatch(/at most 8 cores/);
    expect(unschedulableReason(task(1, { worldSize: 2 }), known)).toMatch(/2 clients/);
    expect(unschedulableReason(task(1), [])).toMatch(/no client has registered/);
  });
});

describe('placeTasks with requirement classes', () => {
  it('places exactly what it places without them, skipping a full class without looking at clients', () => {
    const clients = [
      client('a', { ramGb: 8, freeSlots: 2 }),
      client('b', { ramGb: 64, freeSlots: 1 }),
      client('c', { ramGb: 64, freeSlots: 1, gpuMemoryGb: [16] }),
    ];
    const tasks: PendingTask[] = [];
    const needs = [{ min_ram_gb: 32 }, { min_ram_gb: 1e6 }, {}, { min_gpu_memory_gb: 8 }, { min_ram_gb: 32 }];
    for (let i = 0; i < 200; i++) {
      const requirements = needs[i % needs.length] as PendingTask['requirements'];
      tasks.push(task(i + 1, { requirements, worldSize: i % 7 === 0 ? 2 : 1 }));
    }
    const classed = tasks.map((t) => ({ ...t, classKey: requirementClass(t) }));
    expect(placeTasks(classed, clients)).toEqual(placeTasks(tasks, clients));
    // A class that fits no client is looked at once, not once per task.
    let looked = 0;
    const counting = [client('x', { ramGb: 8, freeSlots: 1, taskTypes: undefined })].map((c) => ({
      ...c,
      get cpuCores() {
        looked++;
        return 4;
      },
    }));
    const hopeless = Array.from({ length: 1000 }, (_, i) =>
      task(i + 1, { requirements: { min_cpu_cores: 64 }, classKey: 'hopeless' }),
    );
    expect(placeTasks(hopeless, counting)).toEqual([]);
    expect(looked).toBe(1);
  });
});

describe('sampled tasks', () => {
  const sampled = firstRoundSample({ clients_per_round: 2, min_available: 3, seed: 5 }, 2);

  it('are placed only with min_available eligible clients, on the clients the sampler picks', () => {
    const t = task(1, { worldSize: 2, sample: sampled });
    const busy = client('c', { freeSlots: 0 });
    expect(placeTasks([t], [client('a'), client('b'), busy])).toEqual([]);
    const four = [client('a'), client('b'), client('c'), client('d', { cordoned: true }), client('e')];
    const placed = placeTasks([t], four);
    expect(placed.map((p) => p.rank)).toEqual([0, 1]);
    const picked = placed.map((p) => p.clientId);
    // Exactly what the sampler picks among the eligible (d is cordoned).
    const expected = sampled!.choose([client('a'), client('b'), client('c'), client('e')])!;
    expect(picked).toEqual(expected.map((p) => p.clientId));
    expect(placed[0]!.sampled).toMatchObject({
      method: 'uniform',
      eligible: 4,
      reason: 'uniform: 2 of 4 eligible',
    });
  });

  it('are explained as waiting for min_available clients', () => {
    const why = unschedulableReason({ ...task(1, { worldSize: 2, sample: sampled }) }, [
      client('a'),
      client('b'),
    ]);
    expect(why).toMatch(/^needs 3 clients with task type command; 2 known client\(s\) qualify/);
    expect(
      unschedulableReason(task(1, { worldSize: 2, sample: sampled }), [
        client('a'),
        client('b'),
        client('c'),
      ]),
    ).toBeNull();
  });
});
