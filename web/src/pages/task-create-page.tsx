import { useRef, useState } from 'preact/hooks';
import { CreateTaskBody, type Task } from '../../../src/api/tasks.js';
import { api, ApiError, errorMessage } from '../api.js';
import { Field, Link } from '../components/ui.js';
import { useTitle } from '../hooks.js';
import { navigate } from '../router.js';
import { validate } from '../validate.js';

/** Config examples by type; the command one follows the progress protocol (JSON lines on stdout). */
const EXAMPLES: Record<string, string> = {
  command: JSON.stringify(
    { command: `for i in $(seq 1 10); do echo '{"progress": '$((i*10))'}'; sleep 1; done` },
    null,
    2,
  ),
  // A training task (docs/training.md): its ranks average their models every round.
  train_mnist: JSON.stringify(
    { rounds: 5, epochs: 1, batch_size: 32, aggregation: { strategy: 'fedavg' }, seed: 1 },
    null,
    2,
  ),
};

type Form = Record<
  | 'name'
  | 'type'
  | 'priority'
  | 'max_attempts'
  | 'world_size'
  | 'min_cpu_cores'
  | 'min_ram_gb'
  | 'gpu_count'
  | 'min_gpu_memory_gb'
  | 'config',
  string
>;

const NUMERIC: [keyof Form, string][] = [
  ['min_cpu_cores', 'requirements/min_cpu_cores'],
  ['min_ram_gb', 'requirements/min_ram_gb'],
  ['gpu_count', 'requirements/gpu_count'],
  ['min_gpu_memory_gb', 'requirements/min_gpu_memory_gb'],
];

/** Turns the form into the API body; a field left empty is left out. */
function toBody(f: Form): { body: Record<string, unknown>; errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const num = (s: string) => (s.trim() === '' ? undefined : Number(s));
  const requirements: Record<string, unknown> = {};
  for (const [key, path] of NUMERIC) {
    const v = num(f[key]);
    if (v !== undefined) requirements[path.split('/')[1] as string] = v;
  }
  const body: Record<string, unknown> = { type: f.type.trim(), requirements };
  if (f.name.trim()) body.name = f.name.trim();
  if (num(f.priority) !== undefined) body.priority = num(f.priority);
  if (num(f.max_attempts) !== undefined) body.max_attempts = num(f.max_attempts);
  if (num(f.world_size) !== undefined) body.world_size = num(f.world_size);
  if (f.config.trim()) {
    try {
      body.config = JSON.parse(f.config);
    } catch (err) {
      errors.config = `config is not valid JSON: ${(err as Error).message}`;
    }
  }
  return { body, errors };
}

/** The create-task form: checked with the API's schema as you go, and by the API on submit. */
export function TaskCreatePage() {
  useTitle('New task');
  const [form, setForm] = useState<Form>({
    name: '',
    type: 'command',
    priority: '0',
    max_attempts: '3',
    world_size: '1',
    min_cpu_cores: '1',
    min_ram_gb: '',
    gpu_count: '',
    min_gpu_memory_gb: '',
    config: EXAMPLES.command as string,
  });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const formRef = useRef<HTMLFormElement>(null);

  const set = (k: keyof Form) => (e: Event) =>
    setForm({ ...form, [k]: (e.currentTarget as HTMLInputElement).value });
  /** On leaving a field: the schema's verdict for that field only. */
  const check = (path: string) => (e: FocusEvent) => {
    // Leaving the field for the submit button: the API answers in a moment, and an error
    // appearing now would move the button from under the pointer.
    if ((e.relatedTarget as HTMLElement | null)?.closest?.('button[type="submit"]')) return;
    const { body, errors: local } = toBody(form);
    const all = { ...validate(CreateTaskBody, body), ...local };
    setErrors((prev) => {
      const next = { ...prev };
      if (all[path]) next[path] = all[path] as string;
      else delete next[path];
      return next;
    });
  };

  /** Moves the focus to the first named field the form has (config/... lives in the config box). */
  const focusFirst = (paths: string[]) => {
    for (const p of paths) {
      const el = formRef.current?.querySelector<HTMLElement>(
        `[data-path="${p.startsWith('config/') ? 'config' : p}"]`,
      );
      if (el) return el.focus();
    }
  };

  const submit = async (e: Event) => {
    e.preventDefault();
    setFormError(null);
    const { body, errors: local } = toBody(form);
    if (Object.keys(local).length) {
      setErrors(local);
      return focusFirst(Object.keys(local));
    }
    setBusy(true);
    try {
      // The API is the judge: what it refuses comes back beside the field it names.
      const task = await api<Task>('POST', '/api/tasks', body);
      navigate(`/tasks/${task.id}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 400 && err.fields.length) {
        const byField = err.fieldMessages();
        // The config is one text box: what the API says of config/rounds goes beside it.
        for (const [field, message] of Object.entries(byField))
          if (field.startsWith('config/'))
            byField.config = byField.config ? `${byField.config}; ${message}` : message;
        setErrors(byField);
        setFormError('The task was not created: correct the marked fields.');
        focusFirst(Object.keys(byField));
      } else setFormError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const input = (
    key: keyof Form,
    path: string,
    label: string,
    extra: Record<string, unknown> = {},
    hint?: string,
  ) => (
    <Field id={`task-${key}`} label={label} error={errors[path]} hint={hint}>
      {(aria) => (
        <input
          {...aria}
          data-path={path}
          name={key}
          value={form[key]}
          onInput={set(key)}
          onBlur={check(path)}
          {...extra}
        />
      )}
    </Field>
  );

  return (
    <div class="page narrow">
      <p class="crumbs">
        <Link href="/tasks">Tasks</Link> / New
      </p>
      <h1>New task</h1>
      <form
        ref={formRef}
        class="form"
        onSubmit={submit}
        noValidate
        aria-describedby={formError ? 'form-error' : undefined}
      >
        {formError ? (
          <p class="note note-error" role="alert" id="form-error">
            {formError}
          </p>
        ) : null}
        <fieldset>
          <legend>Task</legend>
          <div class="row">
            {input(
              'type',
              'type',
              'Type',
              { list: 'task-types', required: true, autocomplete: 'off' },
              'The worker runs it with the executor of this type.',
            )}
            {input('name', 'name', 'Name (optional)', { maxLength: 255 })}
          </div>
          <datalist id="task-types">
            <option value="command" />
            <option value="train_mnist" />
          </datalist>
          <div class="row">
            {input(
              'priority',
              'priority',
              'Priority',
              { type: 'number', step: 1, inputMode: 'numeric' },
              'Higher runs first.',
            )}
            {input(
              'max_attempts',
              'max_attempts',
              'Attempts',
              { type: 'number', min: 1, max: 100, step: 1, inputMode: 'numeric' },
              'Before the task fails.',
            )}
            {input(
              'world_size',
              'world_size',
              'Ranks',
              { type: 'number', min: 1, max: 1000, step: 1, inputMode: 'numeric' },
              'Clients training it at once (distributed training).',
            )}
          </div>
        </fieldset>
        <fieldset>
          <legend>Requirements</legend>
          <p class="hint">What a client needs to get this task. Leave empty for no requirement.</p>
          <div class="row">
            {input('min_cpu_cores', 'requirements/min_cpu_cores', 'CPU cores (min)', {
              type: 'number',
              min: 1,
              step: 1,
              inputMode: 'numeric',
            })}
            {input('min_ram_gb', 'requirements/min_ram_gb', 'RAM, GiB (min)', {
              type: 'number',
              min: 0,
              step: 'any',
              inputMode: 'decimal',
            })}
          </div>
          <div class="row">
            {input('gpu_count', 'requirements/gpu_count', 'GPUs', {
              type: 'number',
              min: 0,
              step: 1,
              inputMode: 'numeric',
            })}
            {input('min_gpu_memory_gb', 'requirements/min_gpu_memory_gb', 'GPU memory, GiB (min)', {
              type: 'number',
              min: 0,
              step: 'any',
              inputMode: 'decimal',
            })}
          </div>
        </fieldset>
        <fieldset>
          <legend>Configuration</legend>
          <Field
            id="task-config"
            label="Config (JSON object)"
            error={errors.config}
            hint="Passed to the executor as is."
          >
            {(aria) => (
              <textarea
                {...aria}
                data-path="config"
                name="config"
                rows={8}
                spellcheck={false}
                value={form.config}
                onInput={set('config')}
                onBlur={check('config')}
              />
            )}
          </Field>
          {EXAMPLES[form.type] && form.config !== EXAMPLES[form.type] ? (
            <button
              type="button"
              class="link"
              onClick={() => setForm({ ...form, config: EXAMPLES[form.type] as string })}
            >
              Use the {form.type} example
            </button>
          ) : null}
        </fieldset>
        <div class="actions">
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create task'}
          </button>
          <Link href="/tasks" class="button secondary">
            Cancel
          </Link>
        </div>
      </form>
    </div>
  );
}
