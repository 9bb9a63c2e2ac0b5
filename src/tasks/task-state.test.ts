import { describe, expect, it } from 'vitest';
import { TASK_STATUSES } from '../storage/schema.js';
import {
  TERMINAL_STATUSES,
  USER_TRANSITIONS,
  resolveUserTarget,
  systemMayChange,
  userMayChange,
} from './task-state.js';

describe('task state machine', () => {
  it('covers every status', () => {
    expect(Object.keys(USER_TRANSITIONS).sort()).toEqual([...TASK_STATUSES].sort());
  });

  it('lets users pause, resume, cancel and retry, nothing else', () => {
    expect(userMayChange('running', 'paused')).toBe(true);
    expect(userMayChange('paused', 'running')).toBe(true);
    expect(userMayChange('pending', 'cancelled')).toBe(true);
    expect(userMayChange('failed', 'pending')).toBe(true);
    expect(userMayChange('completed', 'pending')).toBe(false);
    expect(userMayChange('pending', 'completed')).toBe(false);
    expect(userMayChange('running', 'running')).toBe(false);
  });

  it('never leaves a terminal status by itself', () => {
    for (const s of TERMINAL_STATUSES) {
      for (const t of TASK_STATUSES) expect(systemMayChange(s, t)).toBe(false);
    }
  });

  it('resumes into the queue when nothing runs', () => {
    expect(resolveUserTarget('paused', 'running', false)).toBe('pending');
    expect(resolveUserTarget('paused', 'running', true)).toBe('running');
    expect(resolveUserTarget('running', 'cancelled', true)).toBe('cancelled');
  });
});
