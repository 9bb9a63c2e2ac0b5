import { describe, expect, it } from 'vitest';
import { AuthFailures } from './auth-failures.js';

describe('AuthFailures', () => {
  let now = Date.parse('2030-01-01T00:00:00Z');
  const clock = { now: () => new Date(now) };

  it('refuses an address past max failures until its window ends; others are unaffected', () => {
    const f = new AuthFailures({ max: 3, windowMs: 60_000 }, clock);
    for (let i = 0; i < 3; i++) {
      expect(f.retryAfter('10.0.0.1')).toBe(0);
      f.record('10.0.0.1');
      now += 1000;
    }
    // Window opened at t0; now t0 + 3 s: 57 s left.
    expect(f.retryAfter('10.0.0.1')).toBe(57);
    expect(f.describe('10.0.0.1')).toMatch(/MAX_AUTH_FAILURES=3 per 60 s\); retry in 57 s/);
    expect(f.retryAfter('10.0.0.2')).toBe(0);
    now += 57_000;
    expect(f.retryAfter('10.0.0.1')).toBe(0);
    f.record('10.0.0.1');
    expect(f.retryAfter('10.0.0.1')).toBe(0);
  });

  it('counts nothing when off', () => {
    const f = new AuthFailures(null, clock);
    for (let i = 0; i < 100; i++) f.record('10.0.0.1');
    expect(f.retryAfter('10.0.0.1')).toBe(0);
  });

  it('stays bounded: with more than 10,000 addresses in their windows the oldest is forgotten', () => {
    const f = new AuthFailures({ max: 1, windowMs: 3_600_000 }, clock);
    f.record('first');
    expect(f.retryAfter('first')).toBeGreaterThan(0);
    for (let i = 0; i < 10_000; i++) f.record(`addr-${i}`);
    expect(f.retryAfter('first')).toBe(0);
    expect(f.retryAfter('addr-9999')).toBeGreaterThan(0);
  });
});
