import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { updateProtocolDoc } from './protocol-doc.js';

describe('docs/protocol.md', () => {
  it('carries the current JSON Schema of every message (run npm run docs:protocol)', () => {
    const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
    expect(updateProtocolDoc(doc)).toBe(doc);
  });
});
