import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/**
 * A fresh id for one server process, made once at start: the host name (for people
 * reading logs and Redis keys) and 48 random bits (two processes on one host, or one
 * test process running two servers, never share one). Nothing durable refers to it:
 * presence and bus messages use it to tell instances apart.
 */
export function createInstanceId(): string {
  const host =
    hostname()
      .replace(/[^A-Za-z0-9.-]/g, '-')
      .slice(0, 40) || 'host';
  return `${host}-${randomBytes(6).toString('hex')}`;
}
