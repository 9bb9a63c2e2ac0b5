// A task command for the end-to-end tests, speaking the worker's progress protocol.
// MODE (from config.env):
//   progress  STEPS progress lines STEP_MS apart, then a result line;
//   counter   appends a line to COUNT_FILE every 50 ms, forever (pause shows it stands still);
//   attempt1  on attempt 1 runs forever; on later attempts completes at once.
// PID_FILE, when set, receives the process id.
import { appendFileSync, writeFileSync } from 'node:fs';

const env = process.env;
const attempt = Number(env.AI_FARM_ATTEMPT);
if (env.PID_FILE) writeFileSync(env.PID_FILE, String(process.pid));
const say = (o) => console.log(JSON.stringify(o));

if (env.MODE === 'progress' || (env.MODE === 'attempt1' && attempt > 1)) {
  const steps = Number(env.STEPS ?? 5);
  let i = 0;
  const t = setInterval(
    () => {
      i++;
      say({ progress: (i * 100) / steps, metrics: { loss: 1 / i, step: i } });
      console.log(`plain log line ${i}`);
      if (i >= steps) {
        clearInterval(t);
        say({ result: { steps: i, attempt, task_id: Number(env.AI_FARM_TASK_ID) } });
      }
    },
    Number(env.STEP_MS ?? 50),
  );
} else {
  // Runs until stopped; prints progress so that, orphaned, it dies on the broken pipe.
  let n = 0;
  setInterval(() => {
    n++;
    if (env.COUNT_FILE) appendFileSync(env.COUNT_FILE, '.');
    say({ progress: Math.min(99, n / 10), metrics: { tick: n } });
  }, 50);
}
