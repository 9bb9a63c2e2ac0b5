import { CLIENT_MESSAGES, SERVER_MESSAGES } from './protocol.js';

export const BEGIN = '<!-- BEGIN GENERATED: message schemas (npm run docs:protocol) -->';
export const END = '<!-- END GENERATED -->';

/** The JSON Schema of every message, as the markdown section docs/protocol.md embeds. */
export function renderMessageSchemas(): string {
  const parts: string[] = [BEGIN, ''];
  const section = (title: string, messages: Record<string, unknown>) => {
    parts.push(`### ${title}`, '');
    for (const [name, schema] of Object.entries(messages)) {
      parts.push(`#### \`${name}\``, '', '```json', JSON.stringify(schema, null, 2), '```', '');
    }
  };
  section('Client to server', CLIENT_MESSAGES);
  section('Server to client', SERVER_MESSAGES);
  parts.push(END);
  return parts.join('\n');
}

/** Replaces the generated section of a document with the current schemas. */
export function updateProtocolDoc(doc: string): string {
  const start = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  if (start < 0 || end < 0) throw new Error('docs/protocol.md lacks the generated-section markers');
  return doc.slice(0, start) + renderMessageSchemas() + doc.slice(end + END.length);
}
