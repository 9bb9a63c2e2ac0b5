import { spawn } from 'node:child_process';
import { join } from 'node:path';

// Drives test/clients/original_client.py, a client with the original AI Farm client's wire
// behaviour, and the other Python clients there. Debian's python3, which has
// python3-websockets (not the pyenv one on PATH).
const PYTHON = '/usr/bin/python3';

/** Model code in the original model server's contract: create_model() and train_step(). */
export const LINEAR_MODEL = `
def create_model():
    return {"w": 0.0, "b": 0.0}, {"lr": 0.5}

def train_step(model, optimizer, batch):
    n = len(batch)
    gw = sum(2 * (model["w"] * x + model["b"] - y) * x for x, y in batch) / n
    gb = sum(2 * (model["w"] * x + model["b"] - y) for x, y in batch) / n
    model["w"] -= optimizer["lr"] * gw
    model["b"] -= optimizer["lr"] * gb
    return sum((model["w"] * x + model["b"] - y) ** 2 for x, y in batch) / n

def evaluate(model, data):
    return sum((model["w"] * x + model["b"] - y) ** 2 for x, y in data) / len(data)
`;

export type Event = Record<string, unknown> & { event: string };

export interface OriginalRun {
  code: number | null;
  events: Event[];
  stderr: string;
}

/** Runs the original-frames client to its end (it exits after `--tasks` tasks). */
export function runOriginalClient(args: string[], timeoutMs = 90_000): Promise<OriginalRun> {
  return runPythonClient('original_client.py', args, timeoutMs);
}

/** Runs test/clients/`script` to its end; its stdout is one JSON event a line. */
export function runPythonClient(script: string, args: string[], timeoutMs: number): Promise<OriginalRun> {
  return new Promise((resolve, reject) => {
    const client = join(import.meta.dirname, '..', 'clients', script);
    const child = spawn(PYTHON, [client, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const events = stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Event);
      resolve({ code, events, stderr });
    });
  });
}

/** The frames of a given type the client received. */
export const frames = (run: OriginalRun, type: string): Record<string, unknown>[] =>
  run.events
    .filter((e) => e.event === 'frame' && e.type === type)
    .map((e) => e.frame as Record<string, unknown>);

/** The body the original's admin panel POSTs (its form's defaults), with a url. */
export function adminPanelBody(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'training',
    name: 'sonnet',
    url,
    version: '1.0',
    batch_size: 10,
    learning_rate: 0.001,
    epochs: 3,
    distributed: false,
    n_clients: 3,
    aggregation_frequency: 5,
    warmup_epochs: 2,
    requirements: { min_gpu_memory: 0, min_cpu_cores: 1, min_ram: 0.01 },
    priority: 0,
    data_config: { split_method: 'random', validation_ratio: 0.2 },
    ...extra,
  };
}
