import type { Role } from '../storage/schema.js';

/**
 * Who is calling. A token's name is its principal: tokens sharing a name share the
 * tasks created under it, so a user can rotate tokens without losing their tasks.
 */
export interface Principal {
  kind: 'token' | 'session';
  /** Token id or user id. */
  id: string;
  /** Token name or username; recorded as tasks.created_by. */
  name: string;
  role: Role;
}

export const isAdmin = (p: Principal): boolean => p.role === 'admin';
