import { describe, expect, it } from 'vitest';
import { fromOriginalBody, isOriginalTaskBody, modelOfUrl } from './original-task-body.js';
import { normalizeRequirements, withOriginalKeys } from './requirements.js';
import { taskFrameData } from './task-frame.js';
import { utilizationFromSystemInfo } from './utilization.js';

const ctx = {
  modelServerPort: 5000,
  hosts: ['localhost', '127.0.0.1', '::1', 'farm.example'],
  defaultEpochs: 10,
  defaultBatchSize: 32,
};

/** The body the original's admin panel POSTs with its form's defaults (server/static/admin.js). */
const adminPanel = {
  type: 'training',
  name: 'sonnet',
  url: 'http://localhost:5000/models/sonnet/1.0',
  version: '1.0',
  batch_size: 32,
  learning_rate: 0.001,
  epochs: 10,
  distributed: false,
  n_clients: 3,
  aggregation_frequency: 5,
  warmup_epochs: 2,
  requirements: { min_gpu_memory: 0, min_cpu_cores: 1, min_ram: 1 },
  priority: 0,
  data_config: { split_method: 'random', validation_ratio: 0.2 },
};

/** The example of POST /api/tasks in the original's docs/api-docs.md. */
const apiDocs = {
  type: 'training',
  name: 'model_name',
  url: 'http://model-server/models/model/1.0',
  version: '1.0',
  batch_size: 32,
  learning_rate: 0.001,
  epochs: 10,
  distributed: true,
  requirements: { min_gpu_memory: 0, min_cpu_cores: 1, min_ram: 1 },
  n_clients: 3,
};

function convert(body: Record<string, unknown>) {
  const r = fromOriginalBody(body, ctx);
  if (!r.ok) throw r.error;
  return r.body;
}

describe("the original AI Farm's task body", () => {
  it('is told apart from ours by a field only it has', () => {
    expect(isOriginalTaskBody(adminPanel)).toBe(true);
    expect(isOriginalTaskBody(apiDocs)).toBe(true);
    expect(isOriginalTaskBody({ type: 'command', requirements: {}, config: { url: 'x' } })).toBe(false);
    expect(isOriginalTaskBody({ type: 'command', requirements: {}, bogus: 1 })).toBe(false);
    expect(isOriginalTaskBody(null)).toBe(false);
    expect(isOriginalTaskBody([{ url: 'x' }])).toBe(false);
  });

  it("reads the admin panel's form: fields not ours into config, url at our model server as config.model", () => {
    // Every field of the form but ours (type, requirements, priority) goes into config as it is.
    const { type: _type, requirements: _requirements, priority: _priority, ...formFields } = adminPanel;
    expect(convert(adminPanel)).toEqual({
      type: 'training',
      name: 'sonnet',
      requirements: { min_gpu_memory: 0, min_cpu_cores: 1, min_ram: 1 },
      priority: 0,
      world_size: 1, // n_clients counts only for a distributed task
      config: { ...formFields, model: 'sonnet@1.0' },
    });
  });

  it("reads its API docs' example: distributed n_clients becomes world_size; another host's url stays a url", () => {
    const body = convert(apiDocs);
    expect(body.world_size).toBe(3);
    expect(body.config).toMatchObject({ n_clients: 3, distributed: true, url: apiDocs.url });
    expect(body.config?.model).toBeUndefined();
    // The original's defaults are filled where its client reads them without a fallback.
    expect(body.config).toMatchObject({
      aggregation_frequency: 5,
      warmup_epochs: 2,
      data_config: expect.any(Object),
    });
  });

  it("fills the original's defaults, DEFAULT_EPOCHS and DEFAULT_BATCH_SIZE, and keeps unknown fields in config", () => {
    const body = convert({ name: 'n', url: 'http://elsewhere/x', distributed: false, extra_field: { a: 1 } });
    expect(body.type).toBe('training');
    expect(body.config).toMatchObject({
      epochs: 10,
      batch_size: 32,
      learning_rate: 0.001,
      extra_field: { a: 1 },
    });
    expect(convert({ name: 'n', version: '2', epochs: 1 }).config?.model).toBe('n@2'); // no url: name+version
  });

  it('refuses what it cannot read, naming the field', () => {
    const bad = (body: Record<string, unknown>) => {
      const r = fromOriginalBody(body, ctx);
      return r.ok ? null : { code: r.error.code, message: r.error.message };
    };
    expect(bad({ ...adminPanel, n_clients: 0 })).toMatchObject({
      code: 'invalid_body',
      message: /n_clients/,
    });
    expect(bad({ ...adminPanel, epochs: 'ten' })).toMatchObject({ code: 'invalid_body', message: /epochs/ });
    expect(bad({ ...adminPanel, requirements: { min_ram: -1 } })).toMatchObject({ message: /min_ram/ });
    expect(bad({ ...adminPanel, requirements: { min_vram: 1 } })).toMatchObject({ message: /requirements/ });
    expect(bad({ ...adminPanel, url: 'not a url' })).toMatchObject({ code: 'invalid_url' });
    expect(bad({ ...adminPanel, url: 'http://localhost:5000/models/a/b/c' })).toMatchObject({
      code: 'invalid_model_url',
    });
    expect(bad({ ...apiDocs, world_size: 2 })).toMatchObject({ code: 'conflicting_world_size' });
  });

  it('takes min_cpu_cores 0 of its form as "any"', () => {
    const body = convert({
      ...adminPanel,
      requirements: { min_cpu_cores: 0, min_ram: 0, min_gpu_memory: 0 },
    });
    expect(body.requirements).toEqual({ min_ram: 0, min_gpu_memory: 0 });
  });
});

describe('a url at our model server', () => {
  it('is http(s)://<this server>:MODEL_SERVER_PORT/models/NAME/VERSION', () => {
    const m = (url: string) => {
      const r = modelOfUrl(url, ctx);
      return r.ok ? r.model : r.error.code;
    };
    expect(m('http://127.0.0.1:5000/models/resnet/2.1')).toBe('resnet@2.1');
    expect(m('http://[::1]:5000/models/a/b?token=x')).toBe('a@b');
    expect(m('http://FARM.example:5000/models/m%2Dx/v1')).toBe('m-x@v1');
    expect(m('http://127.0.0.1:5001/models/a/b')).toBeNull(); // another port
    expect(m('http://other.example:5000/models/a/b')).toBeNull(); // another host
    expect(m('http://127.0.0.1:5000/tasks/1/model')).toBeNull();
    expect(m('ftp://127.0.0.1:5000/models/a/b')).toBeNull();
    expect(m('http://127.0.0.1:5000/models/..%2F/b')).toBe('invalid_model_url');
    expect(modelOfUrl('https://localhost/models/a/b', { ...ctx, modelServerPort: 443 })).toEqual({
      ok: true,
      model: 'a@b',
    });
  });
});

describe('requirements under their original names', () => {
  it('are renamed to ours; both names with different values are refused', () => {
    expect(normalizeRequirements({ min_ram: 4, min_gpu_memory: 8, min_cpu_cores: 2 })).toEqual({
      ok: true,
      requirements: { min_ram_gb: 4, min_gpu_memory_gb: 8, min_cpu_cores: 2 },
    });
    expect(normalizeRequirements({ min_ram: 4, min_ram_gb: 4 })).toEqual({
      ok: true,
      requirements: { min_ram_gb: 4 },
    });
    const r = normalizeRequirements({ min_gpu_memory: 8, min_gpu_memory_gb: 4 });
    expect(r.ok ? null : r.error.code).toBe('conflicting_requirements');
  });

  it("ride in task frames beside ours, in the original's units, with neutral values when unset", () => {
    expect(withOriginalKeys({ min_ram_gb: 2, min_gpu_memory_gb: 6, min_cpu_cores: 4, gpu_count: 1 })).toEqual(
      {
        min_ram_gb: 2,
        min_gpu_memory_gb: 6,
        min_cpu_cores: 4,
        gpu_count: 1,
        min_ram: 2,
        min_gpu_memory: 6,
      },
    );
    expect(withOriginalKeys({})).toEqual({ min_gpu_memory: 0, min_cpu_cores: 1, min_ram: 0 });
  });

  it('a task frame also carries rank and world_size in config', () => {
    const data = taskFrameData({
      id: 7,
      type: 'training',
      name: null,
      config: { epochs: 1, rank: 99 },
      requirements: {},
      attempt: 2,
      rank: 1,
      worldSize: 3,
    });
    expect(data).toMatchObject({
      rank: 1,
      world_size: 3,
      attempt: 2,
      config: { epochs: 1, rank: 1, world_size: 3 },
    });
    expect(data.requirements).toEqual({ min_gpu_memory: 0, min_cpu_cores: 1, min_ram: 0 });
  });
});

describe('utilization from the system_info of its heartbeats', () => {
  it('reads its system-info object (gpu load 0..1, memory in MB)', () => {
    expect(
      utilizationFromSystemInfo({
        id: 'c',
        cpu: { cores_logical: 8, usage_percent: 37.5 },
        ram: { total: 1, percent: 61.2 },
        gpu: [
          { id: 0, name: 'A', load: 0.9, memory: { total: 8000, used: 3000, free: 5000 } },
          { id: 1, name: 'B', load: null },
        ],
      }),
    ).toEqual({
      cpu_utilization: 37.5,
      ram_utilization: 61.2,
      gpu_utilization: [{ id: 0, utilization: 90, memory_used: 3000 }],
    });
  });

  it("reads its API docs' flat form, clamps to 0..100, and gives null for its error object", () => {
    expect(utilizationFromSystemInfo({ cpu_usage: 45.2, ram_usage: 160, gpu_usage: 80 })).toEqual({
      cpu_utilization: 45.2,
      ram_utilization: 100,
      gpu_utilization: [{ id: 0, utilization: 80 }],
    });
    expect(utilizationFromSystemInfo({ id: 'c', error: 'psutil missing' })).toBeNull();
    expect(utilizationFromSystemInfo({ cpu: { usage_percent: Number.NaN }, gpu: 'x' })).toBeNull();
  });
});
