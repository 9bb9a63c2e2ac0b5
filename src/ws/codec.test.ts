import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeFrame } from './codec.js';

const sysinfo = {
  id: 'w1',
  hostname: 'box',
  platform: { system: 'Linux', release: '6', version: '1', machine: 'x86_64', processor: '' },
  cpu: {
    brand: 'X',
    cores_physical: 4,
    cores_logical: 8,
    frequency: { current: 1, min: 1, max: 2 },
    usage_percent: 3,
  },
  ram: { total: 16e9, available: 8e9, used: 8e9, percent: 50 },
  gpu: null,
  session: { created_at: 'now', total_tasks_completed: 0, performance_metrics: {} },
};

describe('decodeFrame', () => {
  it("reads the original client's typeless first frame as register", () => {
    const d = decodeFrame(JSON.stringify(sysinfo), false, false);
    expect(d.ok && d.msg.type).toBe('register');
  });

  it('accepts the seed messages as the original client sends them', () => {
    for (const m of [
      { type: 'task_request', client_id: 'w1' },
      {
        type: 'task_progress',
        task_id: '12',
        progress: 50.0,
        metrics: { loss: [1] },
        client_id: 'w1',
        timestamp: 1,
      },
      {
        type: 'task_result',
        task_id: '12',
        status: 'completed',
        metrics: {},
        checkpoint_path: null,
        rank: 0,
      },
      { type: 'heartbeat', client_id: 'w1', timestamp: 'x', system_info: {} },
    ]) {
      const d = decodeFrame(JSON.stringify(m), false, true);
      expect(d.ok, JSON.stringify(d)).toBe(true);
    }
  });

  it('names the problem', () => {
    const cases: [unknown, RegExp][] = [
      ['{', /not valid JSON/],
      [[1], /JSON object/],
      [{ msg_id: 7 }, /no "type"/],
      [{ type: 'dance' }, /unknown message type "dance"/],
      [{ type: 'task_progress', task_id: 1, progress: 'x' }, /progress/],
      [{ type: 'task_progress', task_id: 1, progress: 101 }, /progress/],
      [{ type: 'task_result', task_id: 1, status: 'done' }, /status/],
      [{ type: 'task_result', status: 'completed' }, /task_id/],
    ];
    for (const [frame, msg] of cases) {
      const d = decodeFrame(typeof frame === 'string' ? frame : JSON.stringify(frame), false, true);
      expect(d.ok).toBe(false);
      if (!d.ok) expect(d.message).toMatch(msg);
    }
    const withId = decodeFrame(JSON.stringify({ type: 'nope', msg_id: 'a1' }), false, true);
    expect(!withId.ok && withId.msgId).toBe('a1');
    expect(decodeFrame(Buffer.from('{}'), true, true).ok).toBe(false);
  });

  it('never throws, whatever arrives', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        fc.boolean(),
        (s, reg) => {
          const d = decodeFrame(s, false, reg);
          expect(typeof d.ok).toBe('boolean');
        },
      ),
      { numRuns: 2000 },
    );
  });
});
