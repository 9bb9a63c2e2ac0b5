// Regenerates the message schemas section of docs/protocol.md from src/api/protocol.ts.
import { readFileSync, writeFileSync } from 'node:fs';
import { updateProtocolDoc } from '../src/api/protocol-doc.js';

const path = new URL('../docs/protocol.md', import.meta.url);
writeFileSync(path, updateProtocolDoc(readFileSync(path, 'utf8')));
console.log('docs/protocol.md updated');
