/**
 * Worker-thread entry for {@link PieceWriter}s: one per upload id, opened with its CheckerInit
 * and the path of its temporary file (opened here, see openWriterFile); each upload's requests
 * are handled in order. Started and stopped by checker-threads.ts.
 */
import { parentPort } from 'node:worker_threads';
import type { ThreadReply, ThreadRequest } from './checker-threads.js';
import { openWriterFile, PieceWriter } from './upload-check.js';

if (parentPort) {
  const port = parentPort;
  const writers = new Map<number, PieceWriter>();
  port.on('message', (req: ThreadRequest) => {
    const answer = (r: ThreadReply) => port.postMessage(r);
    try {
      if (req.op === 'open') {
        const writer = new PieceWriter(req.init, openWriterFile(req.path), (r) =>
          answer({ id: req.id, ...r }),
        );
        writers.set(req.id, writer);
        return;
      }
      const writer = writers.get(req.id);
      if (req.op === 'close') {
        writers.delete(req.id);
        void (writer?.close() ?? Promise.resolve()).finally(() => answer({ id: req.id, op: 'closed' }));
        return;
      }
      writer?.handle(req);
    } catch (err) {
      answer({ id: req.id, op: 'error', message: err instanceof Error ? err.message : String(err) });
    }
  });
}
