import type { TaskStatus } from '../storage/schema.js';

/**
 * The task state machine, in one place.
 *
 *   pending ──assign──▶ running ──result──▶ completed | failed | error
 *      ▲  │                │ ▲
 *      │  └─pause─▶ paused ◀┘ └─resume (had work running)
 *      │             │
 *      └──resume─────┘ (nothing running: back to the queue)
 *   any live state ──cancel──▶ cancelled;  failed | error | cancelled ──retry──▶ pending
 *
 * `failed` means the task's own work failed (a client reported failure, or every attempt
 * was used); `error` means AI Farm could not run it (bad configuration found at run time).
 */

/** Changes a user may ask for through PUT /api/tasks/{id}/status, by current status. */
export const USER_TRANSITIONS: Readonly<Record<TaskStatus, readonly TaskStatus[]>> = {
  pending: ['paused', 'cancelled'],
  running: ['paused', 'cancelled'],
  paused: ['running', 'pending', 'cancelled'],
  completed: [],
  failed: ['pending'],
  error: ['pending'],
  cancelled: ['pending'],
};

/** Changes the server itself makes (assignment, results, retries). */
const SYSTEM_TRANSITIONS: Readonly<Record<TaskStatus, readonly TaskStatus[]>> = {
  pending: ['running', 'error', 'failed'],
  running: ['completed', 'failed', 'error', 'pending', 'running'],
  paused: ['pending', 'failed', 'error', 'completed'],
  completed: [],
  failed: [],
  error: [],
  cancelled: [],
};

/** Statuses a task never leaves by itself. */
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set([
  'completed',
  'failed',
  'error',
  'cancelled',
]);

/** Statuses in which clients may hold work for the task. */
export const LIVE_STATUSES: ReadonlySet<TaskStatus> = new Set(['running', 'paused']);

export function userMayChange(from: TaskStatus, to: TaskStatus): boolean {
  return USER_TRANSITIONS[from].includes(to);
}

export function systemMayChange(from: TaskStatus, to: TaskStatus): boolean {
  return SYSTEM_TRANSITIONS[from].includes(to);
}

/**
 * What a requested status really becomes: resuming a paused task that has no work on any
 * client puts it back in the queue instead of pretending it runs.
 */
export function resolveUserTarget(from: TaskStatus, to: TaskStatus, hasLiveAssignments: boolean): TaskStatus {
  if (from === 'paused' && (to === 'running' || to === 'pending'))
    return hasLiveAssignments ? 'running' : 'pending';
  return to;
}
