/**
 * Worker-thread entry for {@link PieceChecker}s: one per upload id, opened with its CheckerInit
 * (the memory is shared with the receiving thread); each upload's requests arrive in order and
 * are answered in order. Started and stopped by checker-threads.ts.
 */
import { parentPort } from 'node:worker_threads';
import type { ThreadReply, ThreadRequest } from './checker-threads.js';
import { PieceChecker, type CheckReply } from './upload-check.js';

if (parentPort) {
  const port = parentPort;
  const checkers = new Map<number, PieceChecker>();
  port.on('message', (req: ThreadRequest) => {
    let reply: CheckReply | null;
    try {
      if (req.op === 'open') {
        checkers.set(req.id, new PieceChecker(req.init));
        return;
      }
      if (req.op === 'close') {
        checkers.delete(req.id);
        return;
      }
      const checker = checkers.get(req.id);
      if (!checker) return;
      reply = checker.handle(req);
    } catch (err) {
      reply = { op: 'error', message: err instanceof Error ? err.message : String(err) };
    }
    if (reply) port.postMessage({ id: req.id, ...reply } satisfies ThreadReply);
  });
}
