/**
 * Serves a stored model: ETag (its sha256), If-None-Match (304), a single byte Range (206,
 * or 416 when unsatisfiable), streamed from disk.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../errors.js';

/** A model file and its digest, as the round journal records it. */
export interface StoredModel {
  path: string;
  digest: string;
  /** Download name, e.g. task-7-round-3.safetensors. */
  name: string;
}

/** Parses `bytes=a-b`, `bytes=a-`, `bytes=-n`; null when absent or not a single range. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'bad' | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'bad';
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'bad';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return 'bad';
  return { start, end };
}

export async function sendModel(
  req: FastifyRequest,
  reply: FastifyReply,
  model: StoredModel,
): Promise<FastifyReply> {
  let size: number;
  try {
    size = (await stat(model.path)).size;
  } catch {
    throw new AppError('model_not_found', `model file ${model.name} is missing on the server`, 404);
  }
  const etag = `"${model.digest}"`;
  void reply
    .header('etag', etag)
    .header('accept-ranges', 'bytes')
    .header('content-type', 'application/octet-stream')
    .header('content-disposition', `attachment; filename="${model.name}"`);
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
    return reply.status(304).send();
  }
  const ifRange = req.headers['if-range'];
  const range = ifRange && ifRange !== etag ? null : parseRange(req.headers.range, size);
  if (range === 'bad') {
    return reply.status(416).header('content-range', `bytes */${size}`).send();
  }
  if (range) {
    void reply
      .status(206)
      .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
      .header('content-length', range.end - range.start + 1);
    return reply.send(createReadStream(model.path, { start: range.start, end: range.end }));
  }
  void reply.header('content-length', size);
  return reply.send(createReadStream(model.path));
}
