import { describe, expect, it } from 'vitest';
import { PauseRelay, type Execution, type ExecutionOutcome } from './types.js';

/** An execution that writes down the orders it gets. */
function recorded(name: string, log: string[]): Execution {
  const done: Promise<ExecutionOutcome> = Promise.resolve({ status: 'completed' });
  return {
    done,
    pause: () => void log.push(`${name} pause`),
    resume: () => void log.push(`${name} resume`),
    stop: () => done,
  };
}

describe('PauseRelay', () => {
  it('pauses an inner execution that starts during a pause, and only while it holds', () => {
    const log: string[] = [];
    const relay = new PauseRelay();
    relay.pause(); // nothing running yet: remembered
    relay.current = recorded('first', log);
    relay.resume();
    relay.pause();
    relay.current = undefined;
    relay.resume(); // nothing running: nobody told
    relay.current = recorded('second', log);
    relay.pause();
    expect(log).toEqual(['first pause', 'first resume', 'first pause', 'second pause']);
    expect(relay.current).toBeDefined();
  });
});
