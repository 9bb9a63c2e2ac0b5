import { describe, expect, it } from 'vitest';
import { generatePassword, hashPassword, verifyPassword } from './password.js';

// Cheap parameters: the format and the checks are what is tested, not the cost.
const FAST = { N: 1024, r: 8, p: 1 };

describe('password hashing (scrypt)', () => {
  it('stores its parameters and a fresh salt with every hash', async () => {
    const a = await hashPassword('correct horse', FAST);
    const b = await hashPassword('correct horse', FAST);
    expect(a).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
  });

  it('accepts the password and nothing else', async () => {
    const h = await hashPassword('correct horse', FAST);
    expect(await verifyPassword('correct horse', h)).toBe(true);
    expect(await verifyPassword('correct horsf', h)).toBe(false);
    expect(await verifyPassword('', h)).toBe(false);
  });

  it('treats equivalent Unicode spellings as one password', async () => {
    const h = await hashPassword('caf\u00e9', FAST);
    expect(await verifyPassword('cafe\u0301', h)).toBe(true);
  });

  it('answers false, never throws, for malformed or tampered hashes', async () => {
    const h = await hashPassword('pw-123456', FAST);
    const parts = h.split('$');
    for (const bad of [
      '',
      'bcrypt$xyz',
      h.replace('scrypt', 'sha1'),
      [...parts.slice(0, 1), String(2 ** 30), ...parts.slice(2)].join('$'), // memory bomb
      [...parts.slice(0, 4), '', parts[5]].join('$'),
      [...parts.slice(0, 5), 'c2hvcnQ'].join('$'),
    ]) {
      expect(await verifyPassword('pw-123456', bad)).toBe(false);
    }
  });

  it('generates 20-character random passwords', () => {
    const a = generatePassword();
    expect(a).toMatch(/^[A-Za-z0-9_-]{20}$/);
    expect(generatePassword()).not.toBe(a);
  });
});
