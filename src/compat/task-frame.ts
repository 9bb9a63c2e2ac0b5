import type { TaskData } from '../api/protocol.js';
import { withOriginalKeys } from './requirements.js';

/** What a task frame is made of: the task's stored parts and the lease it is sent for. */
export interface TaskFrameParts {
  id: number;
  type: string;
  name: string | null;
  config: Record<string, unknown>;
  requirements: Record<string, unknown>;
  attempt: number;
  rank: number;
  worldSize: number;
}

/**
 * The `data` of a `task` frame. Readable by the original AI Farm client too: its
 * requirement keys (min_gpu_memory, min_cpu_cores, min_ram) beside ours, and `rank` and
 * `world_size` also inside `config`, where it reads them.
 */
export function taskFrameData(p: TaskFrameParts): TaskData {
  return {
    id: p.id,
    type: p.type,
    name: p.name,
    config: { ...p.config, rank: p.rank, world_size: p.worldSize },
    requirements: withOriginalKeys(p.requirements),
    attempt: p.attempt,
    rank: p.rank,
    world_size: p.worldSize,
  };
}
