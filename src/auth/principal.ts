import type { Role } from '../storage/schema.js';

/**
 * Who is calling. What it creates belongs to its identity (`ownerOf`), never to its name:
 * names are labels an admin chooses, and two tokens may carry the same one.
 */
export interface Principal {
  kind: 'token' | 'session';
  /** Token id or user id. */
  id: string;
  /** Token name or username; recorded as tasks.created_by, for display only. */
  name: string;
  role: Role;
}

export const isAdmin = (p: Principal): boolean => p.role === 'admin';

/** The owner recorded on what a principal creates (tasks.owner): `token:<id>` or `user:<id>`. */
export const ownerOf = (p: Principal): string => `${p.kind === 'token' ? 'token' : 'user'}:${p.id}`;
